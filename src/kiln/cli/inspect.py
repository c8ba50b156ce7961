"""``kiln inspect``: the manifest, file sizes and the runtime footprint of an artifact."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from kiln.artifact import read_manifest
from kiln.cli.run import open_artifact


def inspect_artifact(artifact: Path, *, as_json: bool, console: Console) -> None:
    tmp = tempfile.mkdtemp(prefix="kiln-inspect-")
    try:
        manifest = read_manifest(open_artifact(artifact, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    data = manifest.to_dict()
    runtime_files = {manifest.runtime["library"], manifest.runtime["runner"],
                     *manifest.runtime.get("tvm_libraries", [])}
    footprint = sum(f["size"] for n, f in manifest.files.items() if n in runtime_files)
    data["footprint"] = {"runtime_bytes": footprint,
                         "model_bytes": manifest.files.get("model.so", {}).get("size", 0),
                         "artifact_bytes": artifact.stat().st_size if artifact.is_file() else None,
                         "runtime_kind": manifest.runtime.get("kind"),
                         # why the compile picked this runtime (absent in older artifacts)
                         "chosen_because": manifest.runtime.get("chosen_because"),
                         # standalone artifacts: the weights file and the planned activations
                         "weights_bytes": manifest.files.get("params.bin", {}).get("size"),
                         "arena_bytes": manifest.runtime.get("arena_bytes")}
    if as_json:
        print(json.dumps(data, indent=2, sort_keys=True))
        return
    spec = manifest.target["spec"]
    ver = manifest.verification
    console.print(f"[bold]{artifact}[/]  (schema {manifest.schema_version}, kiln "
                  f"{manifest.kiln_version}, tvm {manifest.tvm_version})", highlight=False)
    console.print(f"target   {manifest.target['name']}: {spec['description']} "
                  f"[{spec['arch']}, {spec.get('mcpu')}]  {manifest.target['fingerprint'][:23]}…",
                  highlight=False)
    needs = (f"needs glibc >= {manifest.runtime['min_glibc']}" if manifest.runtime.get("library")
             else f"no CPU library: {manifest.runtime.get('reason')}")
    console.print(f"model    {manifest.framework} {manifest.source['file']}, built "
                  f"{manifest.created_at}, {needs}", highlight=False)
    status = (f"verified ({ver['mode']}) against {ver['reference']}" if ver.get("verified")
              else f"NOT verified: {ver.get('reason')}")
    console.print(f"accuracy {status}", highlight=False)
    why = manifest.runtime.get("chosen_because")
    console.print(f"runtime  {manifest.runtime.get('kind')}" + (f" ({why})" if why else ""),
                  highlight=False)
    if manifest.quantization:
        q = manifest.quantization
        console.print(f"int8     {q.get('source')}: {q.get('activations', '')} activations, "
                      f"{q.get('weights', '')} weights ({q.get('calibration_method', '')})",
                      highlight=False)
    if manifest.partition:
        console.print(f"partition {partition_line(manifest.partition)}", highlight=False)
    io = Table("", "name", "shape", "dtype", "max abs err", "cosine")
    errs = {r["name"]: r for r in ver.get("outputs", [])}
    for kind, tensors in (("in", manifest.signature.inputs), ("out", manifest.signature.outputs)):
        for t in tensors:
            r = errs.get(t.name, {}) if kind == "out" else {}
            io.add_row(kind, t.name, str(list(t.shape)), t.dtype,
                       f"{r['max_abs_error']:.3g}" if "max_abs_error" in r else "",
                       f"{r['cosine']:.6f}" if "cosine" in r else "")
    console.print(io)
    files = Table("file", "bytes", "sha256")
    for name, f in sorted(manifest.files.items()):
        files.add_row(name, f"{f['size']:,}", f["sha256"][:16])
    console.print(files)
    if not manifest.runtime.get("library"):  # host-less NPU target: nothing runs on a host
        console.print(f"no runtime: {manifest.runtime.get('npu_model')} is for the device's "
                      "firmware", highlight=False)
        return
    console.print(f"runtime footprint {footprint:,} bytes (runtime libraries + C API + runner); "
                  f"model library {data['footprint']['model_bytes']:,} bytes", highlight=False)


def partition_line(p: dict) -> str:
    """One line on the accelerator hand-off (DPU/TIDL partition, Ethos-U Vela, or why not)."""
    if p.get("status") == "cpu":
        return f"no accelerator: {p['nodes']} nodes, {p['macs']:,} MACs, all on the CPU"
    head = f"{p['accelerator']} ({p['status']})"
    if "skipped" in p:
        return f"{head}: not handed off: {p['skipped']}"
    if "npu_operators" in p:
        est = p["estimate"]
        line = (f"{head}, handed off in {p['handoff']}: {p['npu_operators']} operators on the "
                f"NPU, {p['cpu_operators']} on the CPU; Vela estimates "
                f"{1e3 * float(est.get('inference_time', 0)):.3f} ms per inference")
        if "cpu_fallback" in p:  # host-less MCU target: clock, cycles, memory, CPU ops
            cpu = ", ".join(f"{c['op']} ({c['reason']})" for c in p["cpu_fallback"]) or "none"
            line += (f" at {float(est.get('core_clock', 0)) / 1e6:g} MHz "
                     f"({est.get('cycles_total')} cycles), SRAM {est.get('sram_memory_used')} "
                     f"KiB, flash {est.get('off_chip_flash_memory_used')} KiB, "
                     f"{100 * p['npu_operator_share']:.1f}% of operators on the NPU; "
                     f"left to the Cortex-M: {cpu}")
        return line
    cpu = ", ".join(f"{c['node']} ({c['reason']})" for c in p["cpu_ops"]) or "none"
    return (f"{head}, handed off in {p['handoff']}: {p['nodes_offloaded']}/{p['nodes']} nodes, "
            f"{100 * p['mac_share']:.1f}% of MACs offloaded; kept on the CPU: {cpu}")
