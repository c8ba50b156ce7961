"""The compile driver for tree ensembles: import -> C codegen -> zig -> bundle -> verify -> pack.

Called by :func:`kiln.compiler.compile_model` when the model is a tree ensemble. Same artifact
layout and manifest schema as neural networks (``runtime.kind`` is ``"trees"``), no TVM.
"""

from __future__ import annotations

import datetime as _dt
import shutil
import tempfile
from pathlib import Path

from kiln.artifact import MANIFEST_NAME, Manifest, pack
from kiln.artifact.digests import digest_tree, glibc_needed, sha256_file
from kiln.options import CompileOptions
from kiln.targets import TargetSpec

NO_TVM = "none (tree ensemble: plain C, no TVM)"


def compile_trees(model: Path, spec: TargetSpec, compiler_options: dict, *,
                  options: CompileOptions, output: Path | None, framework: str | None,
                  trust_pickle: bool, sample_inputs: Path | None, progress):
    """Compile a tree-ensemble file for ``spec``; returns :class:`kiln.compiler.CompileResult`."""
    from kiln.codegen.tree_build import (build_tree_library, built_spec, check_tree_buildable,
                                         write_tree_bundle)
    from kiln.codegen.tree_c import read_header, write_sources
    from kiln.compiler import CompileResult
    from kiln.importers.from_trees import import_trees
    from kiln.verify.inputs import load_sample_inputs
    from kiln.verify.tree_gate import tree_accuracy_gate

    check_tree_buildable(spec)
    progress("import")
    imported = import_trees(Path(model), framework, input_shapes=options.shape_dict(),
                            trust_pickle=trust_pickle)
    samples = load_sample_inputs(Path(sample_inputs), imported.signature) if sample_inputs \
        else None
    output = Path(output) if output else Path(f"{Path(model).stem}-{spec.name}.tar.gz")
    staging = Path(tempfile.mkdtemp(prefix="kiln-build-"))
    try:
        progress("compile")
        ens = imported.mod
        with tempfile.TemporaryDirectory(prefix="kiln-treec-") as src_dir:
            sources = write_sources(ens.model, read_header(ens.model), Path(src_dir),
                                    expand_binary=ens.expand_binary, negate=ens.negate,
                                    category_rule=ens.category_rule)
            built = build_tree_library(sources, spec, staging)
        progress("bundle")
        (staging / "signature.txt").write_text(imported.signature.to_text())
        runtime = _runtime(staging, spec, write_tree_bundle(staging, spec), built)
        progress("verify")
        report = tree_accuracy_gate(staging, built_spec(spec).to_dict(), imported, options,
                                    samples)
        progress("pack")
        manifest = _manifest(spec, compiler_options, imported, options, runtime, report, staging)
        (staging / MANIFEST_NAME).write_text(manifest.to_json())
        pack(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return CompileResult(artifact=output, manifest=manifest)


def _runtime(staging: Path, spec: TargetSpec, files: dict, built) -> dict:
    binaries = [staging / n for n in ("model.so", "libkiln_runtime.so", "kiln_run")]
    return {"kind": "trees", "abi_version": 1, **files, "model_library": "model.so",
            "fallback_library": None, "requires_cpu_flags": [], "tvm_libraries": [],
            "cflags": list(built.cflags), "c_sources": built.sources,
            "min_glibc": glibc_needed(binaries),
            "footprint_bytes": sum(p.stat().st_size for p in binaries)}


def _manifest(spec, compiler_options, imported, options, runtime, report, staging) -> Manifest:
    from kiln import __version__
    from kiln.codegen.tree_build import built_spec
    from kiln.importers.from_trees import describe

    opts = options.to_dict()
    opts["pipeline"] = "tree ensemble -> C (kiln.codegen.tree_c) -> zig cc -O2"
    opts["derived_input_shapes"] = imported.derived_shapes
    source = {"file": Path(imported.source).name, "sha256": sha256_file(Path(imported.source)),
              "opset": None, **describe(imported.mod)}
    return Manifest(
        kiln_version=__version__, tvm_version=NO_TVM, tvm_ffi_version=NO_TVM,
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        target={"name": spec.name, "fingerprint": built_spec(spec).fingerprint(),
                "spec": built_spec(spec).to_dict(), "tvm_target": None},
        framework=imported.framework, source=source, signature=imported.signature,
        compile_options=opts, compiler_options=compiler_options, runtime=runtime,
        files=digest_tree(staging, exclude=(MANIFEST_NAME,)), verification=report)
