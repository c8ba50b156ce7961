"""The driver for host-less NPU targets (catalog ``os = "none"``: an Ethos-U55 beside a Cortex-M
with no OS). Kiln builds no CPU library for them: the artifact is Vela's model and estimate.

float TFLite / Keras / SavedModel + ``--quantize int8 --calibration`` -> int8 TFLite (TFLite's
calibrator, kiln.quantize.tflite_quant) -> Vela (kiln.partition.vela) -> the int8 gate (the int8
TFLite under LiteRT against the float model; the NPU itself is not run) -> pack. A full-integer
int8 ``.tflite`` goes to Vela as it is.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import shutil
import tempfile
from pathlib import Path

from kiln.artifact import MANIFEST_NAME, Manifest, pack
from kiln.artifact.digests import digest_tree, sha256_file
from kiln.errors import KilnError
from kiln.options import CompileOptions
from kiln.signature import ModelSignature, TensorInfo
from kiln.targets import TargetSpec

NO_TVM = "none (host-less NPU target: Vela only, no TVM)"
TF_FRAMEWORKS = ("tflite", "tensorflow", "keras")
NOT_RUN = ("the NPU was not run: Kiln has no Ethos-U hardware or simulator (status codegen) and "
           "builds no CPU library for a Cortex-M without an OS")


def compile_npu_only(model: Path, framework: str | None, spec: TargetSpec, compiler_options: dict,
                     *, options: CompileOptions, output, package: dict, progress, workdir: Path,
                     sample_inputs=None):
    """Compile ``model`` for a host-less Ethos-U target; a :class:`kiln.compiler.CompileResult`.
    ``sample_inputs`` (an .npz of float inputs) replace the calibration samples in the gate."""
    from kiln.compiler import CompileResult
    from kiln.partition.vela import vela_handoff

    src = _int8_source(model, framework, spec, options, workdir, progress)
    stem = Path(package.get("package", model.name)).name.split(".")[0] or "model"
    output = Path(output) if output else Path(f"{stem}-{spec.name}.tar.gz")
    staging = Path(tempfile.mkdtemp(prefix="kiln-build-"))
    try:
        progress("partition")
        shutil.copy2(src["int8"], staging / "model_int8.tflite")
        partition = vela_handoff(src["int8"], "tflite", spec.name, workdir / "vela", staging)
        partition["files"] = ["model_int8.tflite", *partition["files"]]
        progress("verify")
        report = _gate(src, options, sample_inputs)
        progress("pack")
        manifest = _manifest(spec, compiler_options, model, src, options, report, staging)
        manifest = dataclasses.replace(manifest, quantization=src["info"], partition=partition)
        (staging / MANIFEST_NAME).write_text(manifest.to_json())
        pack(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return CompileResult(artifact=output, manifest=manifest)


def _int8_source(model: Path, framework, spec: TargetSpec, options: CompileOptions,
                 workdir: Path, progress) -> dict:
    """The int8 TFLite for Vela, the float model (or None) and what the manifest says of them."""
    from kiln.importers.detect import sniff
    from kiln.quantize.tflite_quant import is_int8_tflite, tflite_signature

    framework = framework or sniff(model)
    if framework not in TF_FRAMEWORKS:
        code = "quantize_input_unsupported" if framework == "onnx" else "target_not_yet_supported"
        raise KilnError(code, f"{spec.name} is an Ethos-U NPU without a host CPU Kiln builds for: "
                        f"Vela compiles int8 TFLite, and {model.name} is {framework or 'unknown'}",
                        hint="give a float .tflite, .keras/.h5 or SavedModel with --quantize int8 "
                             "--calibration FILE.npz, or a full-integer int8 .tflite (Kiln has "
                             "no ONNX-to-TFLite converter)")
    if framework == "tflite" and is_int8_tflite(model):
        if options.quantize is not None:
            raise KilnError("invalid_quantize_options", f"{model.name} is already an int8 TFLite",
                            hint="compile it without --quantize/--calibration")
        return {"int8": model, "float": None, "framework": "tflite", "samples": None,
                "signature": tflite_signature(model),
                "info": {"source": "pre-quantized int8 TFLite", "reference": None}}
    if options.quantize is None:
        raise KilnError("invalid_quantize_options", f"{spec.name} ({spec.description}) runs only "
                        "int8 models on its NPU and has no CPU Kiln builds for; a float compile "
                        "makes nothing", hint="add --quantize int8 --calibration FILE.npz "
                        "(representative inputs), or give a full-integer int8 .tflite")
    progress("quantize")
    return _quantize(model, framework, options, workdir)


def _quantize(model: Path, framework: str, options: CompileOptions, workdir: Path) -> dict:
    from kiln.quantize.calibration import load_calibration
    from kiln.quantize.tflite_quant import QUANTIZER, quantize_tflite, tflite_signature

    if framework == "tflite":
        float_model, fsig = model, tflite_signature(model)
        ins = fsig.inputs
    else:
        from kiln.importers.from_tensorflow import convert_to_tflite

        float_model, resolved, _, _ = convert_to_tflite(model, input_shapes=options.shape_dict(),
                                                        workdir=workdir)
        fsig = tflite_signature(float_model)
        ins = tuple(TensorInfo(t.name, tuple(r.shape), r.dtype)
                    for t, r in zip(resolved, fsig.inputs))
    signature = ModelSignature(ins, fsig.outputs)
    if any(t.dtype != "float32" for t in ins):
        raise KilnError("quantize_input_unsupported", f"{model.name} is not a float32 model "
                        f"(inputs {[t.dtype for t in ins]})", hint="give the float model")
    samples = load_calibration(Path(options.quantize.calibration), signature)
    names = [t.name for t in ins]
    int8 = quantize_tflite(float_model, samples, names, workdir)
    info = {"source": "quantized by Kiln", "quantizer": QUANTIZER,
            "activations": "int8 asymmetric", "weights": "int8 per-channel symmetric", "calibration_method": "minmax",
            "calibration_file": Path(options.quantize.calibration).name,
            "calibration_samples": len(samples),
            "reference": "the float32 TFLite model under LiteRT",
            **({"ignored_options": "--calibration-method / --symmetric / --per-channel: TFLite's "
                "calibrator is min-max with Ethos-U's scheme"}
               if options.quantize.method != "minmax" or options.quantize.symmetric
               or not options.quantize.per_channel else {})}
    return {"int8": int8, "float": float_model, "framework": framework, "samples": samples,
            "names": names, "signature": signature, "info": info}


def _gate(src: dict, options: CompileOptions, sample_inputs=None) -> dict:
    """The int8 TFLite fed to Vela against the float model, under LiteRT; raises
    ``accuracy_regression`` below the int8 thresholds (kiln.quantize.accuracy)."""
    from kiln.quantize.accuracy import int8_tolerance
    from kiln.quantize.tflite_quant import int8_vs_fp32

    if src["float"] is None:
        return {"verified": False, "npu_run": False, "passed": None,
                "reason": f"{NOT_RUN}; the model came int8, so there is no float model to "
                          "compare the int8 TFLite with"}
    if not options.verify:
        return {"verified": False, "npu_run": False, "reason": f"{NOT_RUN}; --no-verify"}
    outs = [t.name for t in src["signature"].outputs]
    samples, given = src["samples"], "calibration sample(s)"
    if sample_inputs:
        from kiln.verify.inputs import load_sample_inputs

        samples = [load_sample_inputs(Path(sample_inputs), src["signature"])]
        given = f"input(s) from {Path(sample_inputs).name}"
    figs = int8_vs_fp32(src["float"], src["int8"], samples, src["names"], outs)
    rows, bad = [], []
    for f in figs["outputs"]:
        tol = int8_tolerance(options.tolerance, _ref_scale(f))
        ok = f["cosine"] >= tol.min_cosine and f["max_abs_error"] <= tol.atol + \
            tol.rtol * f["max_abs_reference"]
        rows.append({**f, "atol": tol.atol, "min_cosine": tol.min_cosine, "passed": ok})
        bad += [] if ok else [f"{f['name']}: max abs error {f['max_abs_error']:.4g} (atol "
                              f"{tol.atol:.4g}), cosine {f['cosine']:.6f} (min {tol.min_cosine})"]
    reference = "the float32 TFLite model (LiteRT)"
    if bad and options.verify:
        raise KilnError("accuracy_regression", f"the int8 TFLite fed to Vela disagrees with "
                        f"{reference}: {'; '.join(bad)}",
                        hint="give a larger, representative calibration set, or loosen with "
                             "--atol / --min-cosine if this is expected")
    return {"verified": False, "npu_run": False, "passed": True, "mode": "litert-int8",
            "reason": f"{NOT_RUN}; the int8 TFLite that Vela compiled was run with LiteRT "
                      f"against {reference} on {figs['samples']} {given}",
            "reference": reference, "runtime": figs["runtime"], "inputs": given,
            "outputs": rows}


def _ref_scale(f: dict):
    import numpy as np

    return np.array([f["max_abs_reference"]])


def _manifest(spec, compiler_options, model: Path, src, options, report, staging) -> Manifest:
    from kiln import __version__
    from kiln.quantize.tflite_quant import tflite_signature

    opts = options.to_dict()
    opts["pipeline"] = "int8 TFLite -> Arm Vela (no CPU library: host-less NPU target)"
    source = {"file": model.name, "sha256": _digest(model), "opset": None,
              "format": src["framework"]}
    runtime = {"kind": "none", "abi_version": None, "library": None, "runner": None,
               "model_library": None, "min_glibc": None,
               "npu_model": "accelerator/model_vela.tflite",
               "reason": "build accelerator/model_vela.tflite into TensorFlow "
                         "Lite Micro with the Ethos-U core driver (accelerator/README.md)"}
    return Manifest(
        kiln_version=__version__, tvm_version=NO_TVM, tvm_ffi_version=NO_TVM,
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        target={"name": spec.name, "fingerprint": spec.fingerprint(), "spec": spec.to_dict(),
                "tvm_target": None},
        framework=src["framework"], source=source, signature=tflite_signature(src["int8"]),
        compile_options=opts, compiler_options=compiler_options, runtime=runtime,
        files=digest_tree(staging, exclude=(MANIFEST_NAME,)), verification=report)


def _digest(path: Path) -> str:
    if path.is_file():
        return sha256_file(path)
    from kiln.compiler import _source_digest

    return _source_digest(path)
