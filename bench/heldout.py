"""Held-out models: architectures that Kiln's default schedules were NOT tuned on, compiled with
the default settings for the host and timed against ONNX Runtime in one process, interleaved.
This is the check issue 3 announces ("compile held-out CNN and transformer models ... the ratio
must be at most 2.0 for each"), run on models of our own making so that nobody has looked at them
while writing the schedules: EfficientNet-style MBConv blocks (SiLU, squeeze-excite, 5x5
depthwise), a ConvNeXt-style net (7x7 depthwise, LayerNorm over channels, GELU), SqueezeNet Fire
modules (concat, max pool), a GPT-style causal decoder (token embedding, masked attention) and a
ViT-style encoder (patch embedding, class token).

    .venv/bin/python bench/heldout.py [--models effnet,convnext] [--batches 1] [--threads 2]

Needs the torch CPU wheel (the models are written in PyTorch and exported with the TorchScript
ONNX exporter). Writes bench/results/<date>-<arch>-heldout.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from run import _once, interleaved, kiln_session, ort_session  # noqa: E402

HERE = Path(__file__).resolve().parent


def _torch_models():
    import torch
    from torch import nn

    class SE(nn.Module):
        def __init__(self, c, r=4):
            super().__init__()
            self.a, self.b = nn.Conv2d(c, c // r, 1), nn.Conv2d(c // r, c, 1)

        def forward(self, x):
            s = x.mean((2, 3), keepdim=True)
            return x * torch.sigmoid(self.b(nn.functional.silu(self.a(s))))

    class MBConv(nn.Module):
        def __init__(self, cin, cout, k, stride, expand=6):
            super().__init__()
            mid = cin * expand
            self.body = nn.Sequential(
                nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.SiLU(),
                nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False),
                nn.BatchNorm2d(mid), nn.SiLU(), SE(mid),
                nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
            self.skip = stride == 1 and cin == cout

        def forward(self, x):
            y = self.body(x)
            return x + y if self.skip else y

    def effnet():
        cfg = [(32, 16, 3, 1, 1), (16, 24, 3, 2, 6), (24, 24, 3, 1, 6), (24, 40, 5, 2, 6),
               (40, 40, 5, 1, 6), (40, 80, 3, 2, 6), (80, 112, 5, 1, 6), (112, 192, 5, 2, 6)]
        return nn.Sequential(
            nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.SiLU(),
            *[MBConv(a, b, k, s, e) for a, b, k, s, e in cfg],
            nn.Conv2d(192, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, 1000)), (3, 224, 224)

    class LayerNorm2d(nn.LayerNorm):
        def forward(self, x):
            return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    class ConvNeXtBlock(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
            self.norm = nn.LayerNorm(c)
            self.mlp = nn.Sequential(nn.Linear(c, 4 * c), nn.GELU(), nn.Linear(4 * c, c))

        def forward(self, x):
            y = self.dw(x).permute(0, 2, 3, 1)
            return x + self.mlp(self.norm(y)).permute(0, 3, 1, 2)

    def convnext():
        dims, depths = (48, 96, 192, 384), (1, 1, 3, 1)
        layers = [nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0])]
        for i, (d, n) in enumerate(zip(dims, depths)):
            if i:
                layers += [LayerNorm2d(dims[i - 1]), nn.Conv2d(dims[i - 1], d, 2, 2)]
            layers += [ConvNeXtBlock(d) for _ in range(n)]
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LayerNorm(dims[-1]),
                   nn.Linear(dims[-1], 1000)]
        return nn.Sequential(*layers), (3, 224, 224)

    class Fire(nn.Module):
        def __init__(self, cin, s, e):
            super().__init__()
            self.s = nn.Sequential(nn.Conv2d(cin, s, 1), nn.ReLU())
            self.e1 = nn.Sequential(nn.Conv2d(s, e, 1), nn.ReLU())
            self.e3 = nn.Sequential(nn.Conv2d(s, e, 3, padding=1), nn.ReLU())

        def forward(self, x):
            x = self.s(x)
            return torch.cat([self.e1(x), self.e3(x)], 1)

    def squeezenet():
        pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        return nn.Sequential(
            nn.Conv2d(3, 64, 3, 2), nn.ReLU(), pool, Fire(64, 16, 64), Fire(128, 16, 64), pool,
            Fire(128, 32, 128), Fire(256, 32, 128), pool, Fire(256, 48, 192), Fire(384, 48, 192),
            Fire(384, 64, 256), Fire(512, 64, 256), nn.Dropout(0.0), nn.Conv2d(512, 1000, 1),
            nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()), (3, 224, 224)

    class Attention(nn.Module):
        def __init__(self, d, heads, causal):
            super().__init__()
            self.qkv, self.out, self.h, self.causal = nn.Linear(d, 3 * d), nn.Linear(d, d), heads, causal

        def forward(self, x):
            b, t, d = x.shape
            q, k, v = self.qkv(x).reshape(b, t, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
            att = q @ k.transpose(-1, -2) / (d // self.h) ** 0.5
            if self.causal:
                mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
                att = att.masked_fill(mask, float("-inf"))
            y = att.softmax(-1) @ v
            return self.out(y.transpose(1, 2).reshape(b, t, d))

    class Block(nn.Module):
        def __init__(self, d, heads, causal):
            super().__init__()
            self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.att = Attention(d, heads, causal)
            self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"),
                                     nn.Linear(4 * d, d))

        def forward(self, x):
            x = x + self.att(self.n1(x))
            return x + self.mlp(self.n2(x))

    class GPT(nn.Module):
        def __init__(self, vocab=4096, d=256, layers=4, heads=4, seq=128):
            super().__init__()
            self.tok, self.pos = nn.Embedding(vocab, d), nn.Parameter(torch.randn(1, seq, d) * .02)
            self.blocks = nn.Sequential(*[Block(d, heads, True) for _ in range(layers)])
            self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, vocab, bias=False)

        def forward(self, ids):
            return self.head(self.norm(self.blocks(self.tok(ids) + self.pos)))

    class ViT(nn.Module):
        def __init__(self, d=192, layers=4, heads=3):
            super().__init__()
            self.patch = nn.Conv2d(3, d, 16, 16)
            self.cls, self.pos = nn.Parameter(torch.zeros(1, 1, d)), nn.Parameter(torch.randn(1, 197, d) * .02)
            self.blocks = nn.Sequential(*[Block(d, heads, False) for _ in range(layers)])
            self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, 1000)

        def forward(self, x):
            x = self.patch(x).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
            return self.head(self.norm(self.blocks(x))[:, 0])

    return {"effnet": effnet, "convnext": convnext, "squeezenet": squeezenet,
            "gpt_decoder": lambda: (GPT(), ("ids", 128)), "vit": lambda: (ViT(), (3, 224, 224))}


def export(name: str, batch: int, path: Path) -> dict:
    """Build the seeded model, export it to ONNX at ``path``; the feed for it."""
    import torch

    torch.manual_seed(0)
    model, shape = _torch_models()[name]()
    _calibrate_batchnorm(model, shape)
    model.eval()
    rng = np.random.default_rng(0)
    if shape[0] == "ids":
        x = rng.integers(0, 4096, (batch, shape[1])).astype(np.int64)
    else:
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(model, (torch.from_numpy(x),), buf, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"])
    path.write_bytes(buf.getvalue())
    return {"x": x}


def _calibrate_batchnorm(model, shape) -> None:
    """Give BatchNorm layers the running statistics of real inputs, as training would: with
    PyTorch's initial statistics (mean 0, variance 1) a deep untrained net's activations decay
    towards zero, which no trained network does."""
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    if not norms or shape[0] == "ids":
        return
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(8, *shape))


def bench(name: str, batch: int, threads: int, workdir: Path, rounds: int) -> dict:
    path = workdir / f"{name}-b{batch}.onnx"
    feed = export(name, batch, path)
    ort_run = ort_session(path, threads)
    kiln_run, compile_s, kmodel = kiln_session(path, workdir)
    err = float(np.abs(kiln_run(feed)[0] - ort_run(feed)[0]).max())
    per_round = max(2, min(20, int(200 / max(1.0, _once(ort_run, feed)))))
    med = interleaved({"onnxruntime": ort_run, "kiln": kiln_run}, feed, rounds, per_round)
    return {"model": name, "batch": batch, "threads": threads, "median_ms": med,
            "ratio_to_ort": med["kiln"] / med["onnxruntime"], "kiln_compile_s": compile_s,
            "kiln_max_abs_error_vs_ort": err,
            "kiln_runtime": kmodel.manifest.runtime.get("kind")}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="effnet,convnext,squeezenet,gpt_decoder,vit")
    ap.add_argument("--batches", default="1")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tag", default="", help="suffix of the results file")
    args = ap.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="kiln-heldout-") as tmp:
        os.environ["KILN_TUNE_DIR"] = str(Path(tmp) / "tuning")
        for name in args.models.split(","):
            for batch in map(int, args.batches.split(",")):
                rows.append(bench(name, batch, args.threads, Path(tmp), args.rounds))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    out = HERE / "results" / f"{dt.date.today()}-{platform.machine()}-heldout{'-' + args.tag if args.tag else ''}.json"
    out.write_text(json.dumps({"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                               "threads": args.threads, "rows": rows}, indent=2) + "\n")
    print("| model | batch | ONNX Runtime ms | Kiln ms | Kiln / ORT | compile s | max abs err |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['median_ms']['onnxruntime']:.2f} | "
              f"{r['median_ms']['kiln']:.2f} | **{r['ratio_to_ort']:.2f}x** | "
              f"{r['kiln_compile_s']:.1f} | {r['kiln_max_abs_error_vs_ort']:.1e} |")
    print(f"\nwrote {out}")
    return 0 if all(r["ratio_to_ort"] <= 2.0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
