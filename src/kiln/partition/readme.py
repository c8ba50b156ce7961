"""The hand-off files: what the user runs next on the machine with the vendor's SDK."""

from __future__ import annotations

import json
from pathlib import Path

#: Vitis AI's arch.json for each board (inside the Vitis AI 3.0 docker image)
DPU_ARCH = {"kv260": "/opt/vitis_ai/compiler/arch/DPUCZDX8G/KV260/arch.json",
            "zcu102": "/opt/vitis_ai/compiler/arch/DPUCZDX8G/ZCU102/arch.json",
            "zcu104": "/opt/vitis_ai/compiler/arch/DPUCZDX8G/ZCU104/arch.json"}


def write_vendor_files(accelerator: str, target: str, report: dict, out: Path) -> None:
    subgraphs = [s for s in report["segments"] if s["device"] == "accelerator" and s.get("file")]
    lines = [f"# Hand-off for {target}: {report['accelerator']}", "",
             "Kiln split this model into accelerator and CPU segments (see partition.json), "
             "quantized each accelerator segment to int8 with symmetric power-of-two scales "
             "(calibrated on your --calibration set) and compiled the whole model for the "
             "board's ARM cores (model.so in the artifact: it runs and is verified without the "
             "accelerator). Kiln has no vendor SDK: the accelerator part is handed off, "
             "not compiled or verified (status `codegen`).", "",
             f"Offloaded: {report['nodes_offloaded']}/{report['nodes']} nodes, "
             f"{100 * report['mac_share']:.1f}% of the MACs. Simulated int8 accuracy (ONNX "
             "Runtime running the QDQ segments) is in partition.json.", "",
             "Accelerator segments:", *[f"- `{Path(s['file']).name}` (inputs {s['inputs']}, "
                                         f"outputs {s['outputs']})" for s in subgraphs], "",
             "Kept on the CPU:", *([f"- {c['node']} ({c['op']}): {c['reason']}"
                                    for c in report["cpu_ops"]] or ["- nothing"]), "",
             "## Next steps", ""]
    lines += _dpu_steps(target, subgraphs) if accelerator == "dpu" else _tidl_steps(subgraphs)
    if accelerator == "tidl":
        (out / "tidl_compile_options.json").write_text(json.dumps(tidl_options(), indent=2)
                                                       + "\n")
    (out / "README.md").write_text("\n".join(lines) + "\n")


def _dpu_steps(target: str, subgraphs) -> list[str]:
    arch = DPU_ARCH.get(target, "/opt/vitis_ai/compiler/arch/DPUCZDX8G/<BOARD>/arch.json")
    return [
        "On a machine with the Vitis AI 3.0 docker image (the last release for DPUCZDX8G "
        "boards: KV260, ZCU102, ZCU104):", "",
        "1. Either run each `subgraph_N.int8.onnx` with ONNX Runtime's Vitis AI execution "
        "provider on the board (`providers=['VitisAIExecutionProvider']`; it compiles the QDQ "
        "model for the DPU at session start and caches it), or", "",
        "2. quantize the float segment with `vai_q_onnx` / `vai_q_pytorch` to an `.xmodel` "
        "(the QDQ file gives the power-of-two scales Kiln expects) and compile it:",
        f"   `vai_c_xir -x subgraph_N.xmodel -a {arch} -o out -n subgraph_N`", "",
        "3. Run the CPU segments (`cpu_segment_N.onnx`, float) on the ARM cores after the DPU, "
        "feeding them the tensors named in partition.json; the artifact's model.so runs the "
        "whole model on the ARM cores (`kiln run`) when the DPU is not used.", "",
        "Check `vai_c_xir`'s log line 'DPU subgraph number': it should equal the number of "
        f"accelerator segments here ({len(subgraphs)})."]


def _tidl_steps(subgraphs) -> list[str]:
    return [
        "On an x86 machine with TI's edgeai-tidl-tools set up for your SoC (`SOC=am68pa`, "
        "`am62a`, ...; the tools' version must match the board's Processor SDK firmware):", "",
        "1. For each `subgraph_N.int8.onnx`, compile with TI's ONNX Runtime fork:",
        "   `InferenceSession(path, providers=['TIDLCompilationProvider', "
        "'CPUExecutionProvider'], provider_options=[opts, {}])` with `opts` = "
        "tidl_compile_options.json plus `tidl_tools_path` and `artifacts_folder`, then "
        "`sess.run()` over a few calibration frames (running is compiling).", "",
        "2. Copy the artifacts folder to the board and run with `TIDLExecutionProvider`.", "",
        "3. The CPU segments (`cpu_segment_N.onnx`, float) run on the ARM cores (ONNX "
        "Runtime's CPU provider in the same session); the artifact's model.so runs the whole "
        "model on the ARM cores (`kiln run`) without TIDL."]


def tidl_options() -> dict:
    """Compile options of TI's ONNX Runtime flow for a pre-quantized QDQ model whose scales
    are powers of two (edgeai-tidl-tools docs/model_compilation.md)."""
    return {"tensor_bits": 8, "accuracy_level": 1, "debug_level": 0,
            "advanced_options:prequantized_model": 1,
            "advanced_options:quantization_scale_type": 1,  # 1 = power-of-two scales
            "advanced_options:calibration_frames": 20,
            "advanced_options:calibration_iterations": 1}


def write_picture(report: dict, out: Path) -> None:
    """``partition.html``: the nodes in execution order, coloured by where they run, grouped
    by segment, each CPU node with its reason (no JavaScript, no external files)."""
    from html import escape

    reasons = {c["node"]: c["reason"] for c in report["cpu_ops"]}
    colour = {"accelerator": "#2e7d32", "cpu": "#ef6c00"}
    rows = []
    for seg in report["segments"]:
        boxes = "".join(
            f'<span class="n" style="background:{colour[seg["device"]]}" title="'
            f'{escape(reasons.get(n, "runs on the " + seg["device"]))}">{escape(n)}</span>'
            for n in seg["nodes"])
        rows.append(f"<tr><td>{seg['index']}</td><td>{seg['device']}</td>"
                    f"<td>{escape(', '.join(seg['inputs']))} &rarr; "
                    f"{escape(', '.join(seg['outputs']))}</td><td>{boxes}</td></tr>")
    cpu = "".join(f"<li><b>{escape(c['node'])}</b> ({escape(c['op'])}): {escape(c['reason'])}"
                  "</li>" for c in report["cpu_ops"]) or "<li>nothing</li>"
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>{escape(report['target'])}: {escape(report['accelerator'])} partition</title><style>
body{{font-family:sans-serif}} td{{padding:4px;border-bottom:1px solid #ddd;vertical-align:top}}
.n{{display:inline-block;color:#fff;padding:2px 6px;margin:2px;border-radius:4px}}</style>
</head><body><h1>{escape(report['target'])}: {escape(report['accelerator'])}</h1>
<p><span class="n" style="background:{colour['accelerator']}">accelerator</span>
<span class="n" style="background:{colour['cpu']}">CPU</span>
{report['nodes_offloaded']}/{report['nodes']} nodes, {100 * report['mac_share']:.1f}% of
{report['macs']:,} MACs offloaded (status {escape(report['status'])}: handed off, not run).</p>
<table><tr><th>#</th><th>device</th><th>tensors</th><th>nodes</th></tr>{''.join(rows)}</table>
<h2>Kept on the CPU</h2><ul>{cpu}</ul></body></html>
"""
    (out / "partition.html").write_text(page, encoding="utf-8")


def ethos_u_mcu_readme(r: dict) -> str:
    """README of a host-less Ethos-U55 artifact: Vela's model, built into the user's firmware."""
    est = r["estimate"]
    ms = float(est.get("inference_time", 0)) * 1e3
    clock = float(est.get("core_clock", 0)) / 1e6
    cpu = [f"- {c['op']} (`{c['tensor']}`): {c['reason']}" for c in r.get("cpu_fallback", [])]
    return "\n".join([
        f"# {r['target']}: {r['accelerator']} beside a Cortex-M (no OS)", "",
        f"`model_vela.tflite` is the int8 model compiled by {r['compiler']} for "
        f"{r['accelerator']} (system config {est.get('system_config')}, memory mode "
        f"{est.get('memory_mode')}): {r['npu_operators']} operators run on the NPU inside one "
        f"or more `ethos-u` custom operators, {r['cpu_operators']} stay on the Cortex-M. "
        f"Vela's estimate: {ms:.3f} ms per inference at {clock:g} MHz "
        f"({est.get('cycles_total')} cycles), {est.get('sram_memory_used')} KiB of SRAM, "
        f"{est.get('off_chip_flash_memory_used')} KiB of flash (`vela_summary.csv` has it all). "
        "`model_int8.tflite` is the int8 model Vela read; Kiln ran it with LiteRT against the "
        "float model (the manifest's verification). Kiln did not run the NPU (status `codegen`) "
        "and built no CPU library: a Cortex-M without an OS runs the model inside your firmware.",
        "", "Operators left to the Cortex-M (TFLite Micro kernels, CMSIS-NN where it has them):",
        *(cpu or ["- none"]), "",
        "## Build it into your firmware", "",
        "1. Embed the model, 16-byte aligned: `xxd -i model_vela.tflite > model_data.cc` "
        "(add `alignas(16)` to the array).",
        "2. Build TensorFlow Lite Micro with the Ethos-U kernel, e.g. "
        "`make -f tensorflow/lite/micro/tools/make/Makefile TARGET=cortex_m_corstone_300 "
        "TARGET_ARCH=cortex-m55 CO_PROCESSOR=ethos_u OPTIMIZED_KERNEL_DIR=cmsis_nn microlite`, "
        "and link Arm's ethos-u-core-driver.",
        "3. In the application: `ethos_u_init(&drv, NPU_BASE_ADDRESS, cache, cache_size, 0, 0)`; "
        "a `tflite::MicroMutableOpResolver` with `AddEthosU()` plus the operators listed above; "
        "a `MicroInterpreter` over the model with a tensor arena at least as large as Vela's "
        "SRAM figure (more if the CPU operators need scratch); then `Invoke()`.",
        "4. Without a board: Arm's Corstone-300 FVP (`FVP_Corstone_SSE-300_Ethos-U55`, "
        "ml-embedded-evaluation-kit) runs the same binary and reports NPU cycles.", "",
        "Inputs and outputs are int8 with the scale and zero point stored in the model "
        "(`interpreter.input(0)->params`): quantize float inputs as round(x / scale) + zero "
        "point.", ""])
