"""The runtime bundle of an artifact: TVM's runtime libraries for the target, plus Kiln's C API
(``libkiln_runtime.so``, ``kiln_runtime.h``) and runner (``kiln_run``), built with zig.

TVM's libraries come from the apache-tvm / apache-tvm-ffi wheels for the target's platform:
the installed ones when the target arch is the host's, otherwise downloaded once with
``pip download --platform ...`` and cached. They are never committed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from kiln.artifact.compat import host_arch
from kiln.cache import cache_dir
from kiln.codegen.toolchain import zig_cc
from kiln.errors import KilnError

NATIVE_DIR = Path(__file__).resolve().parent.parent / "native"
TVM_LIBS = ("libtvm_runtime.so", "libtvm_ffi.so")
_WHEEL_PLATFORMS = {
    "x86_64": ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux2014_x86_64"],
    "aarch64": ["manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux2014_aarch64"],
}
def versions() -> dict[str, str]:
    return {pkg: importlib.metadata.version(pkg) for pkg in ("apache-tvm", "apache-tvm-ffi")}


def ffi_include_dir() -> Path:
    spec = importlib.util.find_spec("tvm_ffi")
    if spec is None or spec.origin is None:
        raise KilnError("runtime_bundle_unavailable", "apache-tvm-ffi is not installed",
                        hint="pip install apache-tvm-ffi==0.1.14.post1")
    return Path(spec.origin).parent / "include"


def _installed_libs() -> dict[str, Path]:
    out = {}
    for pkg, sub, lib in (("tvm", "lib", "libtvm_runtime.so"), ("tvm_ffi", "lib", "libtvm_ffi.so")):
        spec = importlib.util.find_spec(pkg)
        path = Path(spec.origin).parent / sub / lib if spec and spec.origin else None
        if path is None or not path.exists():
            raise KilnError("runtime_bundle_unavailable", f"{lib} not found in the installed {pkg}",
                            hint="reinstall kilnml")
        out[lib] = path
    return out


def _download_libs(arch: str, dest: Path) -> None:
    if arch not in _WHEEL_PLATFORMS:
        raise KilnError("target_not_yet_supported", f"no TVM runtime wheel exists for {arch}",
                        hint="32-bit ARM and RISC-V use Kiln's standalone executor: "
                             "--compiler-options '{\"runtime\": \"standalone\"}'")
    vers = versions()
    with tempfile.TemporaryDirectory(prefix="kiln-wheels-") as tmp:
        download_wheels(arch, [f"apache-tvm=={vers['apache-tvm']}",
                               f"apache-tvm-ffi=={vers['apache-tvm-ffi']}"], tmp, "TVM runtime",
                        hint="check network access to PyPI, or set PIP_FIND_LINKS to a folder "
                             "holding the wheels")
        wanted = {"tvm/lib/libtvm_runtime.so": "libtvm_runtime.so",
                  "tvm_ffi/lib/libtvm_ffi.so": "libtvm_ffi.so"}
        for wheel in Path(tmp).glob("*.whl"):
            with zipfile.ZipFile(wheel) as zf:
                for member, name in wanted.items():
                    if member in zf.namelist():
                        with zf.open(member) as src, open(dest / name, "wb") as dst:
                            shutil.copyfileobj(src, dst)
    missing = [n for n in TVM_LIBS if not (dest / n).exists()]
    if missing:
        raise KilnError("runtime_bundle_unavailable", f"the {arch} wheels lack {missing}",
                        hint="report this with the apache-tvm version")


def tvm_runtime_libs(arch: str) -> Path:
    """A folder holding libtvm_runtime.so and libtvm_ffi.so for ``arch``."""
    vers = versions()
    folder = cache_dir() / "runtime" / f"tvm-{vers['apache-tvm']}-ffi-{vers['apache-tvm-ffi']}" / arch
    if all((folder / n).exists() for n in TVM_LIBS):
        return folder
    staging = _staging(folder)
    try:
        if arch == host_arch():
            for name, path in _installed_libs().items():
                shutil.copy2(path, staging / name)
        else:
            _download_libs(arch, staging)
        if not folder.exists():
            os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _staging(folder: Path) -> Path:
    """A fresh folder beside ``folder``, renamed onto it when complete (atomic publish)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))


def _sources_digest() -> str:
    h = hashlib.sha256()
    for name in sorted(p.name for p in NATIVE_DIR.iterdir() if p.suffix in (".c", ".h")):
        h.update(name.encode() + (NATIVE_DIR / name).read_bytes())
    return h.hexdigest()[:16]


def native_runtime(arch: str) -> Path:
    """A folder with Kiln's C API and runner built for ``arch`` (cached by source digest)."""
    libs = tvm_runtime_libs(arch)
    folder = cache_dir() / "native" / f"{arch}-{_sources_digest()}"
    if (folder / "kiln_run").exists():
        return folder
    common = ["-O2", "-std=gnu11", "-Wall", f"-I{ffi_include_dir()}", f"-I{NATIVE_DIR}",
              f"-L{libs}"]
    return build_native(folder, arch, common, "kiln_runtime.c",
                        ["-Wl,--no-as-needed", "-ltvm_runtime", "-ltvm_ffi", "-ldl",
                         "-Wl,-rpath,$ORIGIN"],
                        what="building libkiln_runtime.so")


def build_native(folder: Path, arch: str, common: list[str], runtime_source: str,
                 runtime_link: list[str], *, what: str) -> Path:
    """Build a C API library (``runtime_source`` + ``runtime_link``) and the runner linked to
    it, with the compiler flags ``common``, into ``folder`` (published atomically)."""
    tmp = _staging(folder)
    try:
        zig_cc(arch, [*common, "-shared", "-fPIC", str(NATIVE_DIR / runtime_source), "-o",
                      str(tmp / "libkiln_runtime.so"), *runtime_link], what=what)
        zig_cc(arch, [*common, str(NATIVE_DIR / "kiln_run.c"), "-o", str(tmp / "kiln_run"),
                      f"-L{tmp}", "-lkiln_runtime", "-Wl,-rpath,$ORIGIN"], what="building kiln_run")
        shutil.copy2(NATIVE_DIR / "kiln_runtime.h", tmp / "kiln_runtime.h")
        if not folder.exists():
            os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def bundle_files(arch: str) -> dict[str, Path]:
    """Every runtime file an artifact for ``arch`` carries, by its name in the artifact."""
    libs, native = tvm_runtime_libs(arch), native_runtime(arch)
    files = {n: libs / n for n in TVM_LIBS}
    files.update({n: native / n for n in ("libkiln_runtime.so", "kiln_run", "kiln_runtime.h")})
    return files


def download_wheels(arch: str, requirements: list[str], dest: str, what: str, *,
                    hint: str = "check network access to PyPI") -> None:
    """``pip download`` the CPython 3.11 binary wheels of ``requirements`` for ``arch`` into
    ``dest``; a failure is runtime_bundle_unavailable."""
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
           "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
           "-d", dest, *requirements]
    for plat in _WHEEL_PLATFORMS[arch]:
        cmd += ["--platform", plat]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise KilnError("runtime_bundle_unavailable", f"cannot download the {arch} {what} "
                        f"wheels: {last}", hint=hint, details=proc.stderr)
