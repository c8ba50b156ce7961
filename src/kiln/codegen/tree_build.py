"""Build a tree-ensemble artifact's binaries: ``model.so`` from the generated C, and the tree
runtime (``libkiln_runtime.so`` + ``kiln_run``), all with the same zig toolchain.

No TVM is involved, so this works for every Linux arch the toolchain knows, 32-bit ARM
(hard-float) and RISC-V included. Code is built for the arch's baseline CPU (x86-64, armv8-a,
rv64gc), except on 32-bit ARM, where the target's ``mcpu`` selects the FPU/NEON the
hard-float ABI needs; so no x86 feature check or fallback library is needed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from kiln.cache import cache_dir
from kiln.codegen.toolchain import _ZIG_TRIPLES, zig_cc
from kiln.errors import KilnError
from kiln.targets import TargetSpec

NATIVE_DIR = Path(__file__).resolve().parent.parent / "native"
_RUNTIME_SOURCES = ("kiln_tree_runtime.c", "kiln_run.c", "kiln_runtime.h")
#: -ffp-contract=off: no fused multiply-add, so every arch sums the same way
_CFLAGS = ["-O2", "-std=gnu11", "-Wall", "-ffp-contract=off"]


@dataclass(frozen=True)
class TreeLibrary:
    library: Path        # model.so
    sources: int         # C files generated
    cflags: tuple[str, ...]


def check_tree_buildable(spec: TargetSpec) -> None:
    """Refuse targets whose CPU Kiln cannot build tree code for, with the catalog's reason."""
    if spec.tree_status == "unsupported" or spec.os != "linux" or spec.arch not in _ZIG_TRIPLES:
        raise KilnError("target_not_yet_supported",
                        f"target {spec.name!r} ({spec.arch}, {spec.os}) cannot run tree "
                        f"ensembles yet: {spec.tree_reason}",
                        hint="`kiln targets` lists the targets; every Linux x86_64, aarch64, "
                             "armv7 and riscv64 CPU target takes tree models")


def built_spec(spec: TargetSpec) -> TargetSpec:
    """The spec the tree code is really built for: the arch baseline (no x86 AVX, so no CPU
    feature check or fallback), except the 32-bit ARM mcpu (see :func:`cpu_flags`). Recorded
    as the manifest's ``target.spec`` so the runtime checks what the code needs."""
    if spec.arch == "armv7":
        return spec
    return dataclasses.replace(spec, mcpu=None, mattr=(), simd=None)


def cpu_flags(spec: TargetSpec) -> list[str]:
    """zig's -mcpu for the target: only on 32-bit ARM (the baseline elsewhere)."""
    if spec.arch == "armv7":
        # a generic armhf target (Neo's LINUX/ARM_EABIHF, which declares +neon) gets
        # Cortex-A7: ARMv7-A with VFPv4 and NEON, the oldest core of current 32-bit boards
        mcpu = spec.mcpu if spec.mcpu not in (None, "generic") else "cortex-a7"
        return [f"-mcpu={mcpu.replace('-', '_')}"]
    return []


def build_tree_library(sources: list[Path], spec: TargetSpec, out_dir: Path) -> TreeLibrary:
    """Compile the generated C files into ``out_dir/model.so`` for ``spec``."""
    check_tree_buildable(spec)
    flags = [*_CFLAGS, *cpu_flags(spec)]
    library = out_dir / "model.so"

    def compile_one(src: Path) -> str:
        obj = src.with_suffix(".o")
        zig_cc(spec.arch, [*flags, "-fPIC", "-c", str(src), "-o", str(obj)],
               what=f"compiling the tree model ({src.name})")
        return str(obj)

    if len(sources) <= 2:  # a small model: one zig call (each call costs its start-up)
        zig_cc(spec.arch, [*flags, "-shared", "-fPIC", *(str(s) for s in sources), "-o",
                           str(library), "-lm"], what="compiling the tree model")
        return TreeLibrary(library=library, sources=len(sources), cflags=tuple(flags))
    # one zig process per C file, in parallel: big ensembles span many files
    with ThreadPoolExecutor(max_workers=max(1, min(len(sources), os.cpu_count() or 1))) as pool:
        objects = list(pool.map(compile_one, sources))
    zig_cc(spec.arch, ["-shared", "-fPIC", *objects, "-o", str(library), "-lm"],
           what="linking the tree model")
    return TreeLibrary(library=library, sources=len(sources), cflags=tuple(flags))


def _digest(spec: TargetSpec) -> str:
    h = hashlib.sha256(" ".join(cpu_flags(spec) + _CFLAGS).encode())
    for name in _RUNTIME_SOURCES:
        h.update(name.encode() + (NATIVE_DIR / name).read_bytes())
    return h.hexdigest()[:16]


def tree_runtime(spec: TargetSpec) -> Path:
    """A folder with the tree C API library and runner for ``spec`` (cached by source digest)."""
    folder = cache_dir() / "native-trees" / f"{spec.arch}-{_digest(spec)}"
    if (folder / "kiln_run").exists():
        return folder
    from kiln.codegen.runtime_bundle import build_native

    common = [*_CFLAGS, *cpu_flags(spec), f"-I{NATIVE_DIR}"]
    return build_native(folder, spec.arch, common, "kiln_tree_runtime.c", ["-ldl", "-lpthread"],
                        what="building the tree libkiln_runtime.so")


def write_tree_bundle(staging: Path, spec: TargetSpec) -> dict[str, str]:
    """Copy the tree runtime into ``staging``; return the file names by role."""
    folder = tree_runtime(spec)
    for name in ("libkiln_runtime.so", "kiln_run", "kiln_runtime.h"):
        shutil.copy2(folder / name, staging / name)
    return {"library": "libkiln_runtime.so", "runner": "kiln_run", "header": "kiln_runtime.h"}
