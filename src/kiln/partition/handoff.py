"""Partition a float ONNX model for a board's accelerator, quantize the accelerator segments
the way it computes, simulate them, and write the hand-off folder (``accelerator/``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from kiln.errors import KilnError
from kiln.options import QuantizeOptions
from kiln.partition.opsets import ACCELERATORS
from kiln.partition.readme import write_picture, write_vendor_files
from kiln.partition.split import assign, macs, segments, tensor_shapes

FOLDER = "accelerator"
STATUS = "codegen"  # handed off to the vendor SDK, not run or verified by Kiln


def partition_model(accelerator: str, target: str, fp32_model: Path, samples: list[dict],
                    qopts: QuantizeOptions, workdir: Path, staging: Path) -> dict:
    """The partition report (for the manifest); writes ``staging/accelerator/``."""
    import onnx

    from kiln.quantize.ort_quant import preprocess

    workdir.mkdir(parents=True, exist_ok=True)
    table = ACCELERATORS[accelerator]
    model = onnx.shape_inference.infer_shapes(onnx.load(str(preprocess(fp32_model, workdir))))
    assigned = assign(model, table)
    segs = segments(assigned, model.graph)
    out = staging / FOLDER
    out.mkdir(parents=True, exist_ok=True)
    report = _shares(model, assigned, table)
    files = _write_segments(model, segs, samples, qopts, workdir, out)
    report["segments"] = [{"index": i, "device": s.device, "nodes": [n.name for n in s.nodes],
                           "inputs": s.inputs, "outputs": s.outputs,
                           **{k: v for k, v in files[i].items() if k != "float_file"}}
                          for i, s in enumerate(segs)]
    report["simulated_accuracy"] = _simulate(fp32_model, segs, files, samples, out)
    report.update({"status": STATUS, "target": target, "handoff": f"{FOLDER}/README.md",
                   "quantization": "int8 symmetric, per-tensor, power-of-two scales "
                                   "(ONNX Runtime quantize_static, scales rounded up to 2^k)"})
    report["picture"] = f"{FOLDER}/partition.html"
    write_vendor_files(accelerator, target, report, out)
    write_picture(report, out)
    (out / "partition.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def cpu_only_report(target: str, fp32_model: Path, int8_vs_fp32: dict | None,
                    workdir: Path) -> dict:
    """The partition report of an int8 compile for a board with no accelerator Kiln hands off
    to: every node on the CPU, no segment files; the int8 accuracy is ONNX Runtime's QDQ
    model against the float one (the whole model is the CPU segment)."""
    import onnx

    from kiln.quantize.ort_quant import preprocess

    workdir.mkdir(parents=True, exist_ok=True)
    model = onnx.shape_inference.infer_shapes(onnx.load(str(preprocess(fp32_model, workdir))))
    table = {"name": None, "sources": [], "ops": {}}
    report = _shares(model, [(n, False, "no accelerator on this target") for n in model.graph.node],
                     table)
    report.pop("cpu_ops")
    report.update({"status": "cpu", "target": target,
                   "reason": f"{target} has no neural accelerator Kiln partitions for: every "
                             "node runs on the CPU, compiled by Kiln",
                   "segments": [{"index": 0, "device": "cpu", "nodes": len(model.graph.node)}],
                   "simulated_accuracy": int8_vs_fp32 or {}})
    return report


def _shares(model, assigned, table) -> dict:
    shapes = tensor_shapes(model)
    consts = {t.name: t for t in model.graph.initializer}
    total = sum(macs(n, shapes, consts) for n, _, _ in assigned)
    off = sum(macs(n, shapes, consts) for n, ok, _ in assigned if ok)
    n_off = sum(1 for _, ok, _ in assigned if ok)
    return {"accelerator": table["name"], "sources": table["sources"],
            "nodes": len(assigned), "nodes_offloaded": n_off,
            "node_share": n_off / len(assigned) if assigned else 0.0,
            "macs": total, "macs_offloaded": off, "mac_share": off / total if total else 0.0,
            "cpu_ops": [{"node": n.name, "op": n.op_type, "reason": why}
                        for n, ok, why in assigned if not ok]}


def _write_segments(model, segs, samples, qopts, workdir: Path, out: Path) -> list[dict]:
    """Each segment as ONNX (accelerator ones quantized with power-of-two scales)."""
    import onnx
    from onnx.utils import Extractor

    from kiln.partition.pow2 import to_power_of_two
    from kiln.quantize.ort_quant import quantize_onnx

    full = workdir / "partition.float.onnx"
    onnx.save(model, str(full))
    extractor = Extractor(model)
    feeds = _segment_inputs(full, segs, samples)
    acc_q = dataclasses.replace(qopts, symmetric=True, per_channel=False)
    files = []
    for i, seg in enumerate(segs):
        path = workdir / f"segment_{i}.float.onnx"
        onnx.save(extractor.extract_model(seg.inputs, seg.outputs), str(path))
        if seg.device == "cpu":
            onnx.save(onnx.load(str(path)), str(out / f"cpu_segment_{i}.onnx"))
            files.append({"file": f"{FOLDER}/cpu_segment_{i}.onnx", "float_file": str(path)})
            continue
        seg_dir = workdir / f"seg{i}"
        seg_dir.mkdir(exist_ok=True)
        name = f"subgraph_{i}.int8.onnx"
        try:
            q = quantize_onnx(path, feeds[i], acc_q, seg_dir, name=name)
        except KilnError as exc:
            if exc.code != "nothing_to_quantize":
                raise
            onnx.save(onnx.load(str(path)), str(out / f"subgraph_{i}.float.onnx"))
            files.append({"file": f"{FOLDER}/subgraph_{i}.float.onnx", "float_file": str(path),
                          "note": "no quantizable op (data movement only)"})
            continue
        qm = onnx.load(str(q.path))
        changed = to_power_of_two(qm, feeds[i])
        onnx.save(qm, str(out / name))
        files.append({"file": f"{FOLDER}/{name}", "float_file": str(path),
                      "pow2_scales_changed": changed})
    return files


def _segment_inputs(full: Path, segs, samples) -> list[list[dict]]:
    """Per segment, the float values of its inputs on every calibration sample."""
    import onnxruntime as ort

    names = sorted({x for s in segs for x in s.inputs})
    sess = ort.InferenceSession(str(_with_outputs(full, names)),
                                providers=["CPUExecutionProvider"])
    outs = [o.name for o in sess.get_outputs()]
    values = [{**s, **dict(zip(outs, sess.run(None, s)))} for s in samples]
    return [[{k: v[k] for k in seg.inputs} for v in values] for seg in segs]


def _with_outputs(path: Path, names: list[str]) -> Path:
    import onnx

    m = onnx.load(str(path))
    have = {o.name for o in m.graph.output} | {i.name for i in m.graph.input}
    known = {vi.name: vi for vi in (*m.graph.value_info, *m.graph.input)}
    for n in names:
        if n not in have and n in known:
            m.graph.output.append(known[n])
    out = path.with_name(path.stem + ".taps.onnx")
    onnx.save(m, str(out))
    return out


def _simulate(fp32_model: Path, segs, files, samples, out: Path, limit: int = 8) -> dict:
    """Accelerator segments as power-of-two QDQ and CPU segments in float, all under ONNX
    Runtime's CPU provider (a stand-in for the integer engine), against the float model."""
    import onnxruntime as ort

    from kiln.quantize.accuracy import figures

    def session(path):
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    runs = [session(out.parent / f["file"] if f.get("file") else f["float_file"])
            for f in files]
    ref_sess = session(fp32_model)
    names = [o.name for o in ref_sess.get_outputs()]
    got, ref = [], []
    for s in samples[:limit]:
        env = dict(s)
        for seg, sess in zip(segs, runs):
            env.update(zip(seg.outputs, sess.run(seg.outputs, {k: env[k] for k in seg.inputs})))
        got.append([env[n] for n in names])
        ref.append(ref_sess.run(None, s))
    rows = [figures(n, np.stack([g[i] for g in got]), np.stack([r[i] for r in ref]))
            for i, n in enumerate(names)]
    return {"runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider (integer math "
                       "simulated by QDQ)", "samples": len(got), "outputs": rows}
