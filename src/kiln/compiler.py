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
from kiln.artifact.compat import FALLBACK_MCPU, needs_fallback, required_cpu_flags
from kiln.artifact.digests import digest_tree, glibc_needed, sha256_file
from kiln.errors import KilnError
from kiln.options import CompileOptions
from kiln.targets import TargetSpec, resolve_target

Progress = Callable[[str], None]
FALLBACK_LIBRARY = "model.fallback.so"


@dataclass(frozen=True)
class CompileResult:
    artifact: Path
    manifest: Manifest

    @property
    def verified(self) -> bool:
        return bool(self.manifest.verification.get("verified"))


def compile_model(model: str | Path, *, target: str | None = None, platform: str | None = None,
                  compiler_options: str | dict | None = None, output: str | Path | None = None,
                  options: CompileOptions | None = None, sample_inputs: str | Path | None = None,
                  progress: Progress | None = None, framework: str | None = None,
                  trust_pickle: bool = False) -> CompileResult:
    """Compile ``model`` for a named device (``target``) or a Neo platform (``platform``).

    Returns the path of the ``.tar.gz`` artifact and its manifest. Raises :class:`KilnError`.
    Tree ensembles (XGBoost, LightGBM, scikit-learn; ``framework`` or detected from the file)
    go through :func:`kiln.compiler_trees.compile_trees`; ``trust_pickle`` allows pickle/joblib.
    """
    from kiln.codegen.tvm_build import build_library, check_buildable
    from kiln.importers import import_model
    from kiln.verify.gate import accuracy_gate
    from kiln.verify.inputs import load_sample_inputs

    options = options or CompileOptions()
    step = progress or (lambda _name: None)
    spec, copts = resolve_target(target, platform, compiler_options)
    from kiln.importers.detect import is_tree_model

    if is_tree_model(model, framework):
        from kiln.compiler_trees import compile_trees

        return compile_trees(Path(model), spec, copts.to_dict(), options=options, output=output,
                             framework=framework, trust_pickle=trust_pickle,
                             sample_inputs=sample_inputs, progress=step)
    check_buildable(spec)
    step("import")
    imported = import_model(model, input_shapes=options.shape_dict())
    samples = load_sample_inputs(Path(sample_inputs), imported.signature) if sample_inputs else None
    output = Path(output) if output else Path(f"{Path(model).stem}-{spec.name}.tar.gz")
    staging = Path(tempfile.mkdtemp(prefix="kiln-build-"))
    try:
        step("compile")
        compiled = build_library(imported, spec, options, staging)
        if needs_fallback(spec.to_dict()):
            # Code for a newer x86 CPU (AVX2, AVX-512) gets a portable twin, so the artifact
            # still runs (slower) on an older CPU instead of dying on an illegal instruction.
            portable = dataclasses.replace(spec, mcpu=FALLBACK_MCPU, mattr=(), simd="sse4.2")
            build_library(imported, portable, options, staging, name=FALLBACK_LIBRARY)
        step("bundle")
        runtime = _write_bundle(staging, spec, imported.signature)
        step("verify")
        report = accuracy_gate(staging, spec.to_dict(), imported, options, samples)
        step("pack")
        manifest = _manifest(spec, copts.to_dict(), imported, options, runtime, report,
                             compiled.pipeline, staging)
        (staging / MANIFEST_NAME).write_text(manifest.to_json())
        pack(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return CompileResult(artifact=output, manifest=manifest)


def _write_bundle(staging: Path, spec: TargetSpec, signature) -> dict:
    from kiln.codegen.runtime_bundle import TVM_LIBS, bundle_files

    for name, path in bundle_files(spec.arch).items():
        shutil.copy2(path, staging / name)
    flags = required_cpu_flags(spec.to_dict())
    fallback = FALLBACK_LIBRARY if (staging / FALLBACK_LIBRARY).exists() else None
    text = signature.to_text()
    text += f"requires {' '.join(flags)}\n" if flags else ""
    text += f"fallback {fallback}\n" if fallback else ""
    (staging / "signature.txt").write_text(text)
    binaries = [p for p in staging.iterdir() if p.suffix == ".so" or p.name == "kiln_run"]
    return {"kind": "tvm", "abi_version": 1, "library": "libkiln_runtime.so",
            "runner": "kiln_run", "header": "kiln_runtime.h", "model_library": "model.so",
            "fallback_library": fallback, "requires_cpu_flags": flags,
            "tvm_libraries": list(TVM_LIBS), "min_glibc": glibc_needed(binaries),
            "footprint_bytes": sum((staging / n).stat().st_size for n in (
                "libkiln_runtime.so", "kiln_run", *TVM_LIBS))}


def _manifest(spec, compiler_options, imported, options, runtime, report, pipeline,
              staging) -> Manifest:
    from kiln import __version__
    from kiln.codegen.runtime_bundle import versions

    vers = versions()
    opts = options.to_dict()
    opts["pipeline"] = pipeline
    opts["derived_input_shapes"] = imported.derived_shapes
    return Manifest(
        kiln_version=__version__, tvm_version=vers["apache-tvm"],
        tvm_ffi_version=vers["apache-tvm-ffi"],
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        target={"name": spec.name, "fingerprint": spec.fingerprint(), "spec": spec.to_dict(),
                "tvm_target": spec.tvm_target()},
        framework=imported.framework,
        source={"file": Path(imported.source).name, "sha256": sha256_file(Path(imported.source)),
                "opset": imported.opset},
        signature=imported.signature, compile_options=opts, compiler_options=compiler_options,
        runtime=runtime, files=digest_tree(staging, exclude=(MANIFEST_NAME,)),
        verification=report)


__all__ = ["CompileResult", "KilnError", "compile_model"]
