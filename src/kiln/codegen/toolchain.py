"""The hermetic cross toolchain: ``zig cc`` from the ``ziglang`` wheel.

zig links against a chosen glibc version, so what Kiln builds loads on old device OSes
(glibc 2.27: Ubuntu 18.04, JetPack 4, Debian 10 and newer). No apt cross compiler is needed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kiln.errors import KilnError

#: The glibc every Kiln-built binary links against.
GLIBC_FLOOR = "2.27"

#: Kiln arch -> zig target triple (without the glibc suffix).
_ZIG_TRIPLES = {
    "x86_64": "x86_64-linux-gnu",
    "aarch64": "aarch64-linux-gnu",
    "armv7": "arm-linux-gnueabihf",
    "riscv64": "riscv64-linux-gnu",
}


def zig_target(arch: str) -> str:
    if arch not in _ZIG_TRIPLES:
        raise KilnError("target_not_yet_supported", f"no cross toolchain for arch {arch!r}",
                        hint=f"supported: {', '.join(sorted(_ZIG_TRIPLES))}")
    return f"{_ZIG_TRIPLES[arch]}.{GLIBC_FLOOR}"


def zig_cc(arch: str, args: list[str], *, what: str, cwd: Path | None = None) -> None:
    """Run ``zig cc -target <arch>`` with ``args``; failure is ``toolchain_failed``."""
    cmd = [sys.executable, "-m", "ziglang", "cc", "-target", zig_target(arch), *args]
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KilnError("toolchain_failed", f"{what}: cannot run zig: {exc}",
                        hint="pip install ziglang==0.17.1") from None
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        first = next((ln for ln in lines if "error" in ln), lines[-1] if lines else "")
        tail = "\n".join(lines[-15:])
        raise KilnError("toolchain_failed", f"{what}: zig cc exited with {proc.returncode}: "
                        f"{first[:400]}",
                        hint="run with KILN_DEBUG=1 to see the whole command",
                        details=f"$ {' '.join(cmd)}\n{tail}")


class ZigSharedLinker:
    """An ``fcompile`` for ``tvm.runtime.Executable.export_library`` that links with zig.

    The model library is linked against the bundle's ``libtvm_ffi.so`` (the one symbol it
    imports comes from there) and libm, with ``$ORIGIN`` as its run path.
    """

    output_format = "so"

    def __init__(self, arch: str, triple: str, lib_dir: Path) -> None:
        self.arch = arch
        self.triple = triple
        self.lib_dir = lib_dir

    def get_target_triple(self) -> str:
        return self.triple

    def __call__(self, output: str, objects: list[str], options=None, **_kwargs) -> None:
        extra = list(options or [])
        zig_cc(self.arch, ["-shared", "-fPIC", "-O2", "-o", output, *objects, *extra,
                           # -Bsymbolic: the library's own symbols bind to themselves, not to
                           # same-named ones another model.so or libtvm made global first
                           f"-L{self.lib_dir}", "-ltvm_ffi", "-lm", "-Wl,-Bsymbolic",
                           "-Wl,-rpath,$ORIGIN"],
               what="linking the model library")
