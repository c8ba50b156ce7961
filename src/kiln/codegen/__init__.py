"""Code generation: TVM builds the model library; zig links it and the C runtime per target."""
