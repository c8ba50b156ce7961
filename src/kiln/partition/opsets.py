"""What each accelerator runs, as data: ONNX op type -> constraints.

Kiln has neither Vitis AI nor TI's SDK, so these tables are transcribed from the vendors'
documents, not measured; the vendor compiler has the last word (it may still place a node on
the CPU). Every rule names its source. A constraint dict may hold:

* ``kernel`` / ``stride`` / ``dilation``: [min, max] for each spatial value, or ``kernel_in`` /
  ``stride_in``: the allowed values;
* ``pad_lt_kernel``: every pad is at most kernel - 1;
* ``square``: kernel height == width;
* ``clip_range``: the (min, max) a Clip must have (ReLU6);
* ``modes``: allowed values of the ``mode`` attribute (Pad, Resize);
* ``folded``: runs fused into a neighbour (no kernel of its own, counted as offloaded).
"""

from __future__ import annotations

# ---- AMD/Xilinx DPUCZDX8G (KV260, ZCU102, ZCU104) ----------------------------------------
# Sources: AMD PG338 "DPUCZDX8G for Zynq UltraScale+ MPSoCs" v4.1, table "Deep Learning
# Operators and Parameters Supported", and UG1414 v3.0 "Vitis AI User Guide", section
# "Supported Operators and DPU Limitations" (DPUCZDX8G column). Convolution, depthwise and
# transposed convolution, pooling limits as listed there; leaky ReLU uses alpha 26/256.
_DPU_CONV = {"kernel": [1, 16], "stride": [1, 8], "pad_lt_kernel": True}
DPU = {
    "name": "DPUCZDX8G",
    "sources": ["AMD PG338 v4.1 (DPUCZDX8G product guide), operator table",
                "AMD UG1414 v3.0, Supported Operators and DPU Limitations"],
    "ops": {
        "Conv": _DPU_CONV,                                   # conv2d and depthwise-conv2d
        "ConvTranspose": {"kernel": [1, 16], "stride": [1, 16]},
        "MaxPool": {"kernel": [1, 8], "stride": [1, 8], "pad_lt_kernel": True},
        "AveragePool": {"kernel": [1, 8], "stride": [1, 8], "square": True},
        "GlobalAveragePool": {"kernel": [1, 8], "square": True},  # an 8x8 average pool at most
        "Relu": {}, "LeakyRelu": {},
        "Clip": {"clip_range": (0.0, 6.0)},                  # ReLU6 only
        "Add": {},                                           # elementwise-sum
        "Concat": {},
        "Gemm": {}, "MatMul": {},                            # inner-product (mapped to conv)
        "Flatten": {"folded": True}, "Reshape": {"folded": True},
        "BatchNormalization": {"folded": True},              # folded into the convolution
        "Pad": {"modes": ["constant"]},
        "Resize": {"modes": ["nearest"]},                    # upsample
        "HardSigmoid": {}, "HardSwish": {},
    },
    # no Softmax, Sigmoid, Exp, Tanh, LayerNormalization ...: the ARM cores run them (PG338:
    # softmax is an optional separate IP, not part of the DPU core)
}

# ---- TI TIDL (C7x DSP + MMA: TDA4VM/J721E, AM62A; C66x + EVE on AM57x) -------------------
# Source: TexasInstruments/edgeai-tidl-tools, docs/supported_ops_rts_versions.md (the
# "Supported operators" table of the ONNX Runtime flow, SDK 9.x-10.x). Convolutions with
# kernels 1x1 .. 7x7 and strides 1 or 2; pooling 1x1 .. 3x3 (max) and 2x2 / 3x3 (average);
# Softmax over the last axis; InnerProduct (Gemm/MatMul) on flattened inputs.
TIDL = {
    "name": "TIDL (C7x/MMA)",
    "sources": ["TexasInstruments/edgeai-tidl-tools docs/supported_ops_rts_versions.md"],
    "ops": {
        "Conv": {"kernel_in": [1, 3, 5, 7], "stride_in": [1, 2]},
        "ConvTranspose": {"kernel_in": [2, 4, 8], "stride_in": [2]},
        "MaxPool": {"kernel_in": [1, 2, 3], "stride_in": [1, 2]},
        "AveragePool": {"kernel_in": [2, 3], "stride_in": [1, 2]},
        "GlobalAveragePool": {}, "GlobalMaxPool": {},
        "Relu": {}, "PRelu": {}, "LeakyRelu": {}, "Clip": {}, "Sigmoid": {}, "Tanh": {},
        "HardSigmoid": {}, "HardSwish": {},
        "Add": {}, "Sub": {}, "Mul": {}, "Concat": {}, "Split": {}, "Slice": {},
        "Gemm": {}, "MatMul": {},
        "Softmax": {},
        "Flatten": {}, "Reshape": {}, "Transpose": {}, "Squeeze": {}, "Unsqueeze": {},
        "BatchNormalization": {}, "Pad": {"modes": ["constant"]},
        "Resize": {"modes": ["nearest", "linear"]}, "DepthToSpace": {}, "ArgMax": {},
        "Dropout": {"folded": True}, "Identity": {"folded": True},
    },
}

ACCELERATORS = {"dpu": DPU, "tidl": TIDL}
