"""Write the quick-start example: OUT/example.onnx (a depthwise-separable CNN) and OUT/x.npy."""

import sys
from pathlib import Path

import numpy as np
import onnx

from kiln.examples.models import MODELS


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else ".")
    name = argv[1] if len(argv) > 1 else "depthwise_separable"
    out.mkdir(parents=True, exist_ok=True)
    model = MODELS[name]()
    onnx.save(model, out / "example.onnx")
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    np.save(out / "x.npy", np.random.default_rng(1).standard_normal(dims).astype(np.float32))
    print(f"wrote {out / 'example.onnx'} ({name}) and {out / 'x.npy'} {dims}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
