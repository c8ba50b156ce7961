"""Arm Ethos-U: run Arm's Vela compiler (``ethos-u-vela``) on the int8 TFLite model and put its
optimized model and performance estimate in the artifact's ``accelerator/`` folder."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

from kiln.errors import KilnError

FOLDER = "accelerator"
#: Vela's --accelerator-config for each Ethos-U board in the catalog, and for the host-less
#: Ethos-U55 MCU targets the system config and memory mode of Vela's own Arm/vela.ini
VELA_CONFIG = {"imx93": ("ethos-u65-256", None, None),
               "corstone300": ("ethos-u55-256", "Ethos_U55_High_End_Embedded", "Shared_Sram")}
_FIGURES = ("accelerator_configuration", "system_config", "memory_mode", "inference_time",
            "inferences_per_second", "cycles_total", "nn_macs", "sram_memory_used",
            "dram_memory_used", "total_npu_encoded_weights", "core_clock",
            "off_chip_flash_memory_used", "on_chip_flash_memory_used", "cycles_npu")
_CPU_OP = re.compile(r"^Warning \(supported operators\) operator: (\w+), ofm: '([^']*)'\n"
                     r"Reason: (.*)$", re.M)


def vela_handoff(source: Path, framework: str, target: str, workdir: Path,
                 staging: Path) -> dict:
    """The Ethos-U report for the manifest; writes the Vela model into ``staging``."""
    config, system, memory = VELA_CONFIG.get(target, ("ethos-u65-256", None, None))
    base = {"accelerator": f"Arm {config}", "status": "codegen", "target": target}
    if framework != "tflite":
        return {**base, "skipped": "Vela compiles full-integer int8 TFLite models: convert the "
                "model to int8 .tflite (TFLiteConverter with a representative dataset, or "
                "ai-edge-torch) and compile that for this target"}
    if find_spec("ethosu.vela") is None:
        raise KilnError("missing_dependency", "Ethos-U targets need Arm's Vela compiler",
                        hint="pip install 'kilnml[ethosu]' (ethos-u-vela)")
    out = workdir / "vela"
    out.mkdir(parents=True, exist_ok=True)
    extra = ["--config", "Arm/vela.ini", "--system-config", system,
             "--memory-mode", memory] if system else []
    proc = subprocess.run([sys.executable, "-m", "ethosu.vela", str(source),
                           "--accelerator-config", config, "--output-dir", str(out), *extra],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise KilnError("compile_failed", f"vela failed on {source.name} (exit "
                        f"{proc.returncode})", hint="run vela on the .tflite yourself to see why",
                        details=proc.stderr[-4000:])
    dest = staging / FOLDER
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(next(out.glob("*_vela.tflite")), dest / "model_vela.tflite")
    summary = next(out.glob("*_summary_*.csv"))
    shutil.copy2(summary, dest / "vela_summary.csv")
    with summary.open(newline="") as fh:
        row = next(csv.DictReader(fh))
    ops = {k: int(v) for k, v in re.findall(r"(CPU|NPU) operators = (\d+)", proc.stdout)}
    report = {**base, "compiler": f"ethos-u-vela {_version()}", "npu_operators": ops.get("NPU"),
              "cpu_operators": ops.get("CPU"), "estimate": {k: _num(row.get(k))
                                                            for k in _FIGURES if k in row},
              "files": [f"{FOLDER}/model_vela.tflite", f"{FOLDER}/vela_summary.csv",
                        f"{FOLDER}/README.md"], "handoff": f"{FOLDER}/README.md"}
    if system:  # host-less MCU target
        from kiln.partition.readme import ethos_u_mcu_readme

        report = _with_cpu_fallback(report, proc.stdout)
        (dest / "README.md").write_text(ethos_u_mcu_readme(report))
    else:
        (dest / "README.md").write_text(_readme(report))
    return report


def _with_cpu_fallback(report: dict, stdout: str) -> dict:
    """The ops Vela leaves to the CPU (with Vela's reason) and the NPU's share of the ops."""
    npu, cpu = report["npu_operators"] or 0, report["cpu_operators"] or 0
    return {**report, "npu_operator_share": npu / (npu + cpu) if npu + cpu else 0.0,
            "cpu_fallback": [{"op": op, "tensor": ofm, "reason": why.strip()}
                             for op, ofm, why in _CPU_OP.findall(stdout)]}


def _readme(r: dict) -> str:
    est = r["estimate"]
    return "\n".join([
        f"# Hand-off for {r['target']}: {r['accelerator']}", "",
        f"`model_vela.tflite` is the model compiled by {r['compiler']} for {r['accelerator']} "
        f"({r['npu_operators']} operators on the NPU, {r['cpu_operators']} left to the CPU). "
        f"Vela's estimate: {float(est.get('inference_time', 0)) * 1e3:.3f} ms per inference "
        f"({est.get('cycles_total')} NPU cycles at its default clock); `vela_summary.csv` has "
        "the full estimate. Kiln did not run it (status `codegen`).", "",
        "Next: on the board (NXP i.MX 93 Linux BSP) run `model_vela.tflite` with TFLite / LiteRT "
        "and the Ethos-U delegate (`libethosu_op_delegate.so`, NXP eIQ), or on a Cortex-M build "
        "it into TensorFlow Lite Micro with the ethos-u-core-driver. The artifact's model.so "
        "runs the whole model on the Cortex-A55 cores without the NPU (`kiln run`).", ""])


def _num(value):
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return int(number) if number.is_integer() else number


def _version() -> str:
    from importlib.metadata import version

    return version("ethos-u-vela")
