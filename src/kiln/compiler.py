"""The compile driver: importers -> codegen -> artifact -> verify, top to bottom."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kiln.artifact import MANIFEST_NAME, Manifest, pack
from kiln.compiler_routes import build_by_route, runtime_route
from kiln.artifact.digests import digest_tree, sha256_file
from kiln.errors import KilnError
from kiln.options import CompileOptions, TuneOptions
from kiln.targets import TargetSpec, resolve_target

Progress = Callable[[str], None]


@dataclass(frozen=True)
class CompileResult:
    artifact: Path
    manifest: Manifest

    @property
    def verified(self) -> bool:
        return bool(self.manifest.verification.get("verified"))


def compile_model(model, *, target: str | None = None, platform: str | None = None,
                  compiler_options: str | dict | None = None, output: str | Path | None = None,
                  options: CompileOptions | None = None, sample_inputs: str | Path | None = None,
                  progress: Progress | None = None, framework: str | None = None,
                  framework_version: str | None = None, example_inputs=None,
                  dynamic_shapes=None, trust_pickle: bool = False) -> CompileResult:
    """Compile ``model`` for a named device (``target``) or a Neo platform (``platform``).

    ``model`` is a file, a SavedModel folder, a Neo ``model.tar.gz``, or a ``torch.nn.Module``
    (with ``example_inputs`` and optionally ``dynamic_shapes``, as for ``torch.export``).
    ``framework`` (Neo's enum, any case) is detected from the content when None;
    ``framework_version`` (Neo's FrameworkVersion) is recorded in the manifest.
    Tree ensembles (XGBoost, LightGBM, scikit-learn; ``framework`` or detected from the file)
    go through :func:`kiln.compiler_trees.compile_trees`; ``trust_pickle`` allows pickle/joblib.
    Returns the path of the ``.tar.gz`` artifact and its manifest. Raises :class:`KilnError`.
    Tree ensembles (XGBoost, LightGBM, scikit-learn; ``framework`` or detected from the file)
    go through :func:`kiln.compiler_trees.compile_trees`; ``trust_pickle`` allows pickle/joblib.
    """
    with tempfile.TemporaryDirectory(prefix="kiln-import-") as workdir:
        if not isinstance(model, (str, Path)):
            from kiln.importers.from_torch import export_module

            model = export_module(model, example_inputs, Path(workdir), dynamic_shapes)
            output = output or f"module-{target or 'model'}.tar.gz"
        return _compile(Path(model), target=target, platform=platform,
                        compiler_options=compiler_options, output=output, options=options,
                        sample_inputs=sample_inputs, progress=progress, framework=framework,
                        framework_version=framework_version, workdir=Path(workdir),
                        trust_pickle=trust_pickle)


def _compile(model: Path, *, target, platform, compiler_options, output, options, sample_inputs,
             progress, framework, framework_version, workdir: Path,
             trust_pickle: bool = False) -> CompileResult:
    from kiln.importers import import_model
    from kiln.importers.detect import is_tree_model, open_model
    from kiln.verify.gate import accuracy_gate
    from kiln.verify.inputs import load_sample_inputs

    options = options or CompileOptions()
    step = progress or (lambda _name: None)
    spec, copts = resolve_target(target, platform, compiler_options)
    model, framework, package = open_model(model, framework, workdir)  # a Neo tarball: its model
    if spec.os == "none":  # an NPU beside a Cortex-M without an OS: Vela only, no CPU library
        from kiln.compiler_npu import compile_npu_only

        return compile_npu_only(model, framework, spec, copts.to_dict(), options=options,
                                output=output, package=package, progress=step, workdir=workdir,
                                sample_inputs=sample_inputs)
    int8 = _int8(model, framework, options, workdir, step)
    if is_tree_model(model, framework):
        from kiln.compiler_trees import compile_trees

        return compile_trees(model, spec, copts.to_dict(), options=options, output=output,
                             framework=framework, trust_pickle=trust_pickle,
                             sample_inputs=sample_inputs, progress=step)
    route = runtime_route(spec, copts, compiler_options, options.opt_level)
    dtype = _compute_dtype(spec, copts)
    if dtype != "float32":
        options = dataclasses.replace(options, tolerance=options.tolerance.filled_from(dtype))
    step("import")
    imported = import_model(int8.model if int8 else model, input_shapes=options.shape_dict(),
                            framework=framework, workdir=workdir)
    if int8:  # the gate compares the int8 artifact with the float model (int8.reference)
        imported = dataclasses.replace(imported, source=int8.reference)
    package = {**package, **({"requested_framework_version": str(framework_version)}
                             if framework_version else {})}
    imported = dataclasses.replace(imported, source_info={**imported.source_info, **package})
    if options.tuning is not None:
        step("tune")
        _tune(imported, spec, options.tuning, dtype)
    samples = load_sample_inputs(Path(sample_inputs), imported.signature) if sample_inputs else None
    if samples is None and int8 and int8.gate_inputs is not None:
        samples = int8.gate_inputs
    stem = Path(package.get("package", model.name)).name.split(".")[0] or "model"
    output = Path(output) if output else Path(f"{stem}-{spec.name}.tar.gz")
    staging = Path(tempfile.mkdtemp(prefix="kiln-build-"))
    try:
        step("compile")
        compiled, runtime = build_by_route(route, imported, spec, options, staging, dtype, step)
        partition = _partition(spec, int8, options, workdir, staging, step, imported)
        step("verify")
        device = getattr(compiled, "device", None)
        report = _gpu_unverified(spec, options, device) or \
            accuracy_gate(staging, _host_spec(spec, device).to_dict(), imported, options,
                          samples, int8=int8 is not None)
        if int8 and not sample_inputs and int8.gate_inputs is not None and "inputs" in report:
            report = {**report, "inputs": "calibration sample 0"}
        step("pack")
        manifest = _manifest(spec, copts.to_dict(), imported, options, runtime, report,
                             compiled.pipeline, staging, dtype=dtype)
        manifest = dataclasses.replace(manifest, quantization=int8.info if int8 else {},
                                       partition=partition)
        (staging / MANIFEST_NAME).write_text(manifest.to_json())
        pack(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return CompileResult(artifact=output, manifest=manifest)


def tune_model(model: str | Path, tuning: TuneOptions, *, target: str | None = None,
               platform: str | None = None, compiler_options: str | dict | None = None,
               input_shapes: dict[str, list[int]] | None = None,
               progress: Progress | None = None):
    """Tune ``model``'s kernels for a target into the target's tuning database (reused by
    every later compile for that target). Returns a :class:`kiln.optimize.tuning.TuneReport`."""
    from kiln.codegen.tvm_build import check_buildable
    from kiln.importers import import_model
    from kiln.importers.detect import open_model

    spec, copts = resolve_target(target, platform, compiler_options)
    check_buildable(spec)
    _check_tune_device(spec, copts, tuning)
    dtype = _compute_dtype(spec, copts)
    with tempfile.TemporaryDirectory(prefix="kiln-import-") as workdir:
        path, framework, _ = open_model(Path(model), None, Path(workdir))
        imported = import_model(path, input_shapes=input_shapes, framework=framework,
                                workdir=Path(workdir))
        return _tune(imported, spec, tuning, dtype, progress)


def _tune(imported, spec: TargetSpec, tuning: TuneOptions, dtype: str,
          progress: Progress | None = None):
    if spec.accelerator == "nvidia":
        from kiln.optimize.cuda_tuning import tune_cuda

        return tune_cuda(imported.mod, spec, tuning, dtype=dtype, progress=progress)
    from kiln.compiler_tuning import runs_here, tune_in_model

    if runs_here(spec, tuning):  # each kernel's schedule is chosen by timing the whole model
        return tune_in_model(imported, spec, tuning, dtype, progress)
    from kiln.optimize.tuning import tune_model as tune_kernels

    return tune_kernels(imported.mod, spec, tuning, dtype=dtype, progress=progress)


def _check_tune_device(spec: TargetSpec, copts, tuning: TuneOptions) -> None:
    """An NVIDIA target tunes on this machine's GPU: refuse before the model is imported when
    there is none of the target's arch (``device_unavailable``)."""
    if spec.accelerator != "nvidia":
        return
    from kiln.codegen.cuda_build import check_cuda_options
    from kiln.optimize.cuda_gpu import check_tuning_gpu

    check_cuda_options(spec, copts.cuda_ver)
    check_tuning_gpu(spec, rpc=tuning.rpc)


def _int8(model: Path, framework, options: CompileOptions, workdir: Path, step):
    """The int8 plan (kiln.quantize.flow): quantize with the calibration set, or a model that
    is already QDQ; None for a float compile."""
    from kiln.quantize.flow import plan_int8

    if options.quantize is not None:
        step("quantize")
    return plan_int8(model, framework, options, workdir)


def _partition(spec: TargetSpec, int8, options: CompileOptions, workdir: Path, staging: Path,
               step, imported) -> dict:
    """For a board with a DPU or TIDL accelerator and ``--quantize``: the accelerator
    segments, quantized and handed off in ``accelerator/`` (kiln.partition); for Ethos-U, Vela's
    model and estimate; else {}."""
    from kiln.partition import ACCELERATORS, partition_model

    if spec.accelerator == "ethos_u" and spec.accelerator_status is not None:
        from kiln.partition.vela import vela_handoff

        step("partition")
        return vela_handoff(Path(imported.source), imported.framework, spec.name,
                            workdir / "vela", staging)
    if int8 and int8.samples and spec.accelerator is None:
        from kiln.partition.handoff import cpu_only_report

        return cpu_only_report(spec.name, int8.reference,
                               int8.info.get("onnxruntime_int8_vs_fp32"), workdir / "partition")
    if not int8 or not int8.samples or spec.accelerator_status is None \
            or spec.accelerator not in ACCELERATORS:
        return {}
    step("partition")
    return partition_model(spec.accelerator, spec.name, int8.reference, int8.samples,
                           options.quantize, workdir / "partition", staging)


def _compute_dtype(spec: TargetSpec, copts) -> str:
    """The compute precision the ``dtype`` compiler option asks for, checked against the
    target (Neo's own values, float32 and int64, name the input dtype: float32 compute)."""
    from kiln.targets import list_targets
    from kiln.targets.dtypes import check_dtype, native_dtypes
    from kiln.targets.options import COMPUTE_DTYPES

    if copts.dtype not in COMPUTE_DTYPES:
        return "float32"
    able = [t.name for t in list_targets()
            if t.status == "verified" and "float16" in native_dtypes(t)]
    check_dtype(spec, copts.dtype, able)
    return copts.dtype


def _gpu_unverified(spec: TargetSpec, options, device: dict | None) -> dict | None:
    """The report of a GPU artifact that cannot run here (None: it can, run the gate)."""
    if device is None or not options.verify:
        return None
    from kiln.artifact.gpu import gpu_problem

    problem = gpu_problem(spec.gpu_arch)
    if problem is None:
        return None
    return {"verified": False, "skipped": True,
            "reason": f"verification SKIPPED: {problem}; the device code was checked "
                      f"structurally only ({device['device_code']['cubins']} cubin(s) for "
                      f"{spec.gpu_arch}, no CUDA source), outputs were NOT compared with the "
                      "reference (run scripts/gpu-check.sh on a GPU)"}


def _host_spec(spec: TargetSpec, device: dict | None) -> TargetSpec:
    """The CPU the artifact's host code was built for (GPU artifacts: a baseline CPU)."""
    if device is None:
        return spec
    from kiln.codegen.cuda_build import host_spec

    return host_spec(spec)


def _manifest(spec, compiler_options, imported, options, runtime, report, pipeline,
              staging, *, dtype: str) -> Manifest:
    from kiln import __version__
    from kiln.codegen.runtime_bundle import versions

    vers = versions()
    opts = options.to_dict()
    opts["pipeline"] = pipeline
    opts["compute_dtype"] = dtype
    opts["derived_input_shapes"] = imported.derived_shapes
    return Manifest(
        kiln_version=__version__, tvm_version=vers["apache-tvm"],
        tvm_ffi_version=vers["apache-tvm-ffi"],
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        target={"name": spec.name, "fingerprint": spec.fingerprint(), "spec": spec.to_dict(),
                "tvm_target": runtime.get("device", {}).get("tvm_target") or spec.tvm_target()},
        framework=imported.framework,
        source={"file": Path(imported.source).name, "sha256": _source_digest(Path(imported.source)),
                "opset": imported.opset, "framework_version": imported.framework_version,
                **imported.source_info},
        signature=imported.signature, compile_options=opts, compiler_options=compiler_options,
        runtime=runtime, files=digest_tree(staging, exclude=(MANIFEST_NAME,)),
        verification=report)


def _source_digest(path: Path) -> str:
    """sha256 of a model file; of its sorted (name, digest) lines for a SavedModel folder."""
    if path.is_file():
        return sha256_file(path)
    import hashlib

    lines = "".join(f"{k} {v['sha256']}\n" for k, v in digest_tree(path).items())
    return hashlib.sha256(lines.encode()).hexdigest()


__all__ = ["CompileResult", "KilnError", "compile_model", "tune_model"]

