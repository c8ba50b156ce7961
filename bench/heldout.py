"""Held-out models: architectures that Kiln's default schedules were NOT tuned on, compiled with
the default settings for the host and timed against ONNX Runtime in one process, interleaved.
This is the check issue 3 announces ("compile held-out CNN and transformer models ... the ratio
must be at most 2.0 for each"), run on models of our own making so that nobody has looked at them
while writing the schedules: EfficientNet-style MBConv blocks (SiLU, squeeze-excite, 5x5
depthwise), a ConvNeXt-style net (7x7 depthwise, LayerNorm over channels, GELU), SqueezeNet Fire
modules (concat, max pool), a GPT-style causal decoder (token embedding, masked attention) and a
ViT-style encoder (patch embedding, class token). Added in session 13, after the first set stood
within 2x: a DenseNet (pre-activation BN-ReLU before each conv, growing concats, average-pool
transitions), an Inception-v3 "C" stage (1x7 / 7x1 convs, 3x3 average pool, 299x299 input), a
ShuffleNetV2 (channel split with ``chunk``, channel shuffle with ``view`` / ``transpose``), a
UNet (transposed convs, skip concats, 128x128), a ResNeXt (grouped 3x3 convs, 32 groups), a
MobileNetV3 (hard-swish, hard-sigmoid squeeze-excite, 5x5 depthwise), a DeepLab-style head
(dilated 3x3 convs, bilinear 8x upsampling) and two transformer blocks of BERT-base width
(hidden 768, 12 heads, tanh GELU).

    .venv/bin/python bench/heldout.py [--models effnet,convnext] [--batches 1] [--threads 2]
                                      [--alternate-s 4]

Each model is timed in blocks (each runtime's runs after a 0.3 s pause, interleaved round by
round: ``ratio_to_ort``) and then run by run, one of each in turn with no pause
(``ratio_alternating``); the exit status is 1 if either ratio is over 2.0.

A model Kiln fails to compile gets a row with its error (and the exit status 1), so one failure
does not hide the others' figures.

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
import time
from pathlib import Path

import numpy as np

from kiln.errors import KilnError

sys.path.insert(0, str(Path(__file__).parent))
from interleave import _loop  # noqa: E402
from run import SETTLE_S, _once, interleaved, kiln_session, ort_session  # noqa: E402

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

    def cbr(cin, cout, k, stride=1, pad=None, groups=1, dilation=1, act=nn.ReLU):
        pad = tuple((kk // 2) * dilation for kk in ((k, k) if isinstance(k, int) else k)) \
            if pad is None else pad
        return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad, dilation, groups, bias=False),
                             nn.BatchNorm2d(cout), act())

    class DenseLayer(nn.Module):  # pre-activation: BN-ReLU-conv, features concatenated
        def __init__(self, cin, growth):
            super().__init__()
            self.body = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, 4 * growth, 1, bias=False),
                                      nn.BatchNorm2d(4 * growth), nn.ReLU(),
                                      nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False))

        def forward(self, x):
            return torch.cat([x, self.body(x)], 1)

    def densenet():
        layers, c = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                     nn.MaxPool2d(3, 2, 1)], 64
        for i, n in enumerate((4, 8, 8)):
            for _ in range(n):
                layers.append(DenseLayer(c, 32))
                c += 32
            if i < 2:
                layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False),
                           nn.AvgPool2d(2, 2)]
                c //= 2
        layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                   nn.Linear(c, 1000)]
        return nn.Sequential(*layers), (3, 224, 224)

    class InceptionC(nn.Module):  # factorized 7x7: 1x7 and 7x1 convs, a 3x3 average pool
        def __init__(self, cin, mid):
            super().__init__()
            self.b1 = cbr(cin, 192, 1)
            self.b7 = nn.Sequential(cbr(cin, mid, 1), cbr(mid, mid, (1, 7)), cbr(mid, 192, (7, 1)))
            self.bd = nn.Sequential(cbr(cin, mid, 1), cbr(mid, mid, (7, 1)), cbr(mid, mid, (1, 7)),
                                    cbr(mid, mid, (7, 1)), cbr(mid, 192, (1, 7)))
            self.bp = nn.Sequential(nn.AvgPool2d(3, 1, 1), cbr(cin, 192, 1))

        def forward(self, x):
            return torch.cat([self.b1(x), self.b7(x), self.bd(x), self.bp(x)], 1)

    def inception():
        return nn.Sequential(cbr(3, 32, 3, 2, 0), cbr(32, 64, 3), nn.MaxPool2d(3, 2),
                             cbr(64, 192, 3, 2, 0), nn.MaxPool2d(3, 2), cbr(192, 768, 1),
                             InceptionC(768, 128), InceptionC(768, 160),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(768, 1000)), (3, 299, 299)

    class Shuffle(nn.Module):  # ShuffleNetV2 unit: channel split (or two strided branches), shuffle
        def __init__(self, cin, cout, stride):
            super().__init__()
            half = cout // 2
            self.branch = nn.Sequential(
                cbr(cin if stride == 2 else half, half, 1),
                cbr(half, half, 3, stride, groups=half, act=nn.Identity), cbr(half, half, 1))
            self.side = nn.Sequential(cbr(cin, cin, 3, 2, groups=cin, act=nn.Identity), cbr(cin, half, 1)) \
                if stride == 2 else None

        def forward(self, x):
            if self.side is None:
                a, b = x.chunk(2, 1)
                y = torch.cat([a, self.branch(b)], 1)
            else:
                y = torch.cat([self.side(x), self.branch(x)], 1)
            n, c, h, w = y.shape
            return y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)

    def shufflenet():
        layers, cin = [cbr(3, 24, 3, 2), nn.MaxPool2d(3, 2, 1)], 24
        for c, n in ((116, 4), (232, 8), (464, 4)):
            layers += [Shuffle(cin, c, 2)] + [Shuffle(c, c, 1) for _ in range(n - 1)]
            cin = c
        layers += [cbr(464, 1024, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1024, 1000)]
        return nn.Sequential(*layers), (3, 224, 224)

    class UNet(nn.Module):  # encoder-decoder: max pools, transposed convs, skip concats
        def __init__(self, c=32):
            super().__init__()
            self.d = nn.ModuleList([nn.Sequential(cbr(a, b, 3), cbr(b, b, 3))
                                    for a, b in ((3, c), (c, 2 * c), (2 * c, 4 * c), (4 * c, 8 * c))])
            self.up = nn.ModuleList([nn.ConvTranspose2d(b, b // 2, 2, 2) for b in (8 * c, 4 * c, 2 * c)])
            self.u = nn.ModuleList([nn.Sequential(cbr(b, b // 2, 3), cbr(b // 2, b // 2, 3))
                                    for b in (8 * c, 4 * c, 2 * c)])
            self.head = nn.Conv2d(c, 2, 1)

        def forward(self, x):
            skips = []
            for i, d in enumerate(self.d):
                x = d(x if i == 0 else nn.functional.max_pool2d(x, 2))
                skips.append(x)
            for up, u, s in zip(self.up, self.u, reversed(skips[:-1])):
                x = u(torch.cat([up(x), s], 1))
            return self.head(x)

    class Bottleneck(nn.Module):  # ResNeXt: grouped 3x3 conv (32 groups)
        def __init__(self, cin, width, cout, stride):
            super().__init__()
            self.body = nn.Sequential(cbr(cin, width, 1), cbr(width, width, 3, stride, groups=32),
                                      cbr(width, cout, 1, act=nn.Identity))
            self.skip = cbr(cin, cout, 1, stride, 0, act=nn.Identity) if stride > 1 or cin != cout else None

        def forward(self, x):
            return torch.relu(self.body(x) + (x if self.skip is None else self.skip(x)))

    def resnext():
        layers, cin = [cbr(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1)], 64
        for i, (w, c, n) in enumerate(((128, 256, 2), (256, 512, 2), (512, 1024, 2))):
            for j in range(n):
                layers.append(Bottleneck(cin, w, c, 2 if i and not j else 1))
                cin = c
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 1000)]
        return nn.Sequential(*layers), (3, 224, 224)

    class SEh(nn.Module):  # MobileNetV3's squeeze-excite: ReLU, then a hard sigmoid
        def __init__(self, c):
            super().__init__()
            self.a, self.b = nn.Conv2d(c, c // 4, 1), nn.Conv2d(c // 4, c, 1)

        def forward(self, x):
            return x * nn.functional.hardsigmoid(self.b(torch.relu(self.a(x.mean((2, 3), keepdim=True)))))

    class V3Block(nn.Module):
        def __init__(self, cin, mid, cout, k, stride, se, act):
            super().__init__()
            self.body = nn.Sequential(cbr(cin, mid, 1, act=act), cbr(mid, mid, k, stride, groups=mid, act=act),
                                      SEh(mid) if se else nn.Identity(), cbr(mid, cout, 1, act=nn.Identity))
            self.skip = stride == 1 and cin == cout

        def forward(self, x):
            y = self.body(x)
            return x + y if self.skip else y

    def mobilenet_v3():
        hs, re = nn.Hardswish, nn.ReLU
        cfg = [(16, 16, 16, 3, 2, True, re), (16, 72, 24, 3, 2, False, re), (24, 88, 24, 3, 1, False, re),
               (24, 96, 40, 5, 2, True, hs), (40, 240, 40, 5, 1, True, hs), (40, 120, 48, 5, 1, True, hs),
               (48, 288, 96, 5, 2, True, hs), (96, 576, 96, 5, 1, True, hs)]
        return nn.Sequential(cbr(3, 16, 3, 2, act=hs), *[V3Block(*c) for c in cfg], cbr(96, 576, 1, act=hs),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(576, 1024), nn.Hardswish(),
                             nn.Linear(1024, 1000)), (3, 224, 224)

    def deeplab():  # dilated 3x3 convs (ASPP) and a bilinear upsample
        class ASPP(nn.Module):
            def __init__(self):
                super().__init__()
                self.stem = nn.Sequential(cbr(3, 32, 3, 2), cbr(32, 64, 3, 2), cbr(64, 128, 3, 2))
                self.rates = nn.ModuleList([cbr(128, 64, 1)] + [cbr(128, 64, 3, dilation=r) for r in (2, 4, 6)])
                self.head = nn.Sequential(cbr(256, 64, 1), nn.Conv2d(64, 8, 1))

            def forward(self, x):
                y = self.stem(x)
                y = self.head(torch.cat([r(y) for r in self.rates], 1))
                return nn.functional.interpolate(y, scale_factor=8.0, mode="bilinear", align_corners=False)
        return ASPP(), (3, 256, 256)

    def bert_base_2l():  # BERT-base width (768, 12 heads), two post-attention blocks
        return nn.Sequential(*[Block(768, 12, False) for _ in range(2)]), (128, 768)

    return {"effnet": effnet, "convnext": convnext, "squeezenet": squeezenet,
            "gpt_decoder": lambda: (GPT(), ("ids", 128)), "vit": lambda: (ViT(), (3, 224, 224)),
            "densenet": densenet, "inception": inception, "shufflenet": shufflenet,
            "unet": lambda: (UNet(), (3, 128, 128)), "resnext": resnext,
            "mobilenet_v3": mobilenet_v3, "deeplab": deeplab,
            "bert_base_2l": bert_base_2l}


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


def alternating(ort_run, kiln_run, feed: dict, seconds: float) -> dict:
    """One run of each in turn (ORT, Kiln, ORT, ...) for ``seconds``, no pauses: every run
    starts beside the other runtime's spinning worker (ORT's spins 100-200 ms after a run,
    Kiln's for its block time, ``KILN_SPIN_MS``). Medians in ms."""
    time.sleep(SETTLE_S)
    ort_times, kiln_times = _loop([ort_run, kiln_run], feed, seconds)
    return {"onnxruntime": float(np.median(ort_times)), "kiln": float(np.median(kiln_times))}


def bench(name: str, batch: int, threads: int, workdir: Path, rounds: int,
          alternate_s: float = 0.0) -> dict:
    path = workdir / f"{name}-b{batch}.onnx"
    feed = export(name, batch, path)
    ort_run = ort_session(path, threads)
    try:
        kiln_run, compile_s, kmodel = kiln_session(path, workdir)
    except KilnError as exc:  # a row that says so, and the other models still run
        return {"model": name, "batch": batch, "threads": threads, "error": str(exc),
                "ratio_to_ort": None}
    err = float(np.abs(kiln_run(feed)[0] - ort_run(feed)[0]).max())
    per_round = max(2, min(20, int(200 / max(1.0, _once(ort_run, feed)))))
    med = interleaved({"onnxruntime": ort_run, "kiln": kiln_run}, feed, rounds, per_round)
    alt = alternating(ort_run, kiln_run, feed, alternate_s) if alternate_s > 0 else None
    return {"model": name, "batch": batch, "threads": threads, "median_ms": med,
            "ratio_to_ort": med["kiln"] / med["onnxruntime"],
            "alternating_ms": alt,
            "ratio_alternating": alt["kiln"] / alt["onnxruntime"] if alt else None,
            "kiln_compile_s": compile_s,
            "kiln_max_abs_error_vs_ort": err,
            "kiln_runtime": kmodel.manifest.runtime.get("kind")}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="effnet,convnext,squeezenet,gpt_decoder,vit,densenet,"
                    "inception,shufflenet,unet,resnext,mobilenet_v3,deeplab,bert_base_2l")
    ap.add_argument("--batches", default="1")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tag", default="", help="suffix of the results file")
    ap.add_argument("--alternate-s", type=float, default=4.0,
                    help="seconds of run-by-run alternation per model after the blocks (0: none)")
    args = ap.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="kiln-heldout-") as tmp:
        os.environ["KILN_TUNE_DIR"] = str(Path(tmp) / "tuning")
        for name in args.models.split(","):
            for batch in map(int, args.batches.split(",")):
                rows.append(bench(name, batch, args.threads, Path(tmp), args.rounds,
                                  args.alternate_s))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    out = HERE / "results" / f"{dt.date.today()}-{platform.machine()}-heldout{'-' + args.tag if args.tag else ''}.json"
    out.write_text(json.dumps({"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                               "threads": args.threads, "rows": rows}, indent=2) + "\n")
    print("| model | batch | ONNX Runtime ms | Kiln ms | Kiln / ORT | alternating | compile s "
          "| max abs err |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["ratio_to_ort"] is None:
            print(f"| {r['model']} | {r['batch']} | | | **failed** | | {r['error'][:80]} |")
            continue
        alt = f"{r['ratio_alternating']:.2f}x" if r["ratio_alternating"] else "-"
        print(f"| {r['model']} | {r['batch']} | {r['median_ms']['onnxruntime']:.2f} | "
              f"{r['median_ms']['kiln']:.2f} | **{r['ratio_to_ort']:.2f}x** | "
              f"{alt} | "
              f"{r['kiln_compile_s']:.1f} | {r['kiln_max_abs_error_vs_ort']:.1e} |")
    print(f"\nwrote {out}")
    ok = all(r["ratio_to_ort"] is not None and r["ratio_to_ort"] <= 2.0
             and (r["ratio_alternating"] or 0.0) <= 2.0 for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
