"""PyTorch eager for the bench models: each ONNX node of the zoo graphs becomes the matching
torch op, run in order (what an nn.Module's forward does), weights as torch tensors.

onnx2torch would do this too, but it imports torchvision, whose PyPI build does not load with
the CPU torch wheel used here. Only the ops of `kiln.examples.zoo` are covered."""

from __future__ import annotations

import numpy as np


def torch_session(model, threads: int, device: str = "cpu"):
    """A callable feed -> [outputs as numpy], or None when torch is not installed.
    ``device="cuda"``: weights live on the GPU, each call copies the inputs there and the
    outputs back (as Kiln's and ONNX Runtime's GPU sessions do)."""
    try:
        import torch
        import torch.nn.functional as F  # noqa: N812
        from onnx import helper, numpy_helper
    except ImportError:
        return None
    torch.set_num_threads(threads)
    consts = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy())
              for i in model.graph.initializer}
    # float weights on the device; integer constants (Reshape's shapes) stay host values
    consts = {k: v.to(device) if v.is_floating_point() else v for k, v in consts.items()}
    nodes = [(n.op_type, list(n.input), list(n.output),
              {a.name: helper.get_attribute_value(a) for a in n.attribute})
             for n in model.graph.node]
    outputs = [o.name for o in model.graph.output]

    def conv(x, w, b=None, pads=(0, 0, 0, 0), strides=(1, 1), group=1, **_):
        return F.conv2d(x, w, b, stride=tuple(strides), padding=tuple(pads[:2]), groups=group)

    def gemm(a, b, c=None, transB=0, alpha=1.0, beta=1.0, **_):
        return F.linear(a, b, c) if transB else a @ b + (c if c is not None else 0)

    ops = {
        "Conv": conv, "Gemm": gemm, "Relu": lambda x, **_: F.relu(x),
        "Add": lambda a, b, **_: a + b, "Mul": lambda a, b, **_: a * b,
        "Div": lambda a, b, **_: a / b, "Erf": lambda x, **_: torch.erf(x),
        "Identity": lambda x, **_: x, "MatMul": lambda a, b, **_: a @ b,
        "Clip": lambda x, lo, hi, **_: torch.clamp(x, float(lo), float(hi)),
        "Flatten": lambda x, axis=1, **_: torch.flatten(x, axis),
        "GlobalAveragePool": lambda x, **_: F.adaptive_avg_pool2d(x, 1),
        "MaxPool": lambda x, kernel_shape, strides, pads=(0, 0, 0, 0), **_: F.max_pool2d(
            x, tuple(kernel_shape), tuple(strides), tuple(pads[:2])),
        "Reshape": lambda x, shape, **_: torch.reshape(x, [int(d) for d in shape.tolist()]),
        "Transpose": lambda x, perm, **_: x.permute(*perm),
        "Softmax": lambda x, axis=-1, **_: torch.softmax(x, axis),
        "LayerNormalization": lambda x, g, b, axis=-1, epsilon=1e-5, **_: F.layer_norm(
            x, x.shape[axis:], g, b, epsilon),
    }

    def run(feed: dict) -> list[np.ndarray]:
        env = dict(consts)
        env.update({k: torch.from_numpy(v).to(device) for k, v in feed.items()})
        with torch.inference_mode():
            for op, ins, outs, attrs in nodes:
                env[outs[0]] = ops[op](*[env[i] for i in ins if i], **attrs)
            return [env[o].cpu().numpy() for o in outputs]

    return run
