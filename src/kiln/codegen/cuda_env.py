"""What a CUDA build needs on a build host without a GPU, and what a CUDA artifact carries.

TVM compiles CUDA kernels to a cubin only when its CUDA runtime library
(``libtvm_runtime_cuda.so``) is loaded; that library needs ``libcuda.so.1`` (the driver) and
``libcudart.so.13``. Without them TVM silently keeps the CUDA *source* (``CUDAFallbackModule``),
which the C runtime cannot load. So on a host without a driver Kiln loads a stub ``libcuda.so.1``
(built here with zig: every entry point returns CUDA_ERROR_INVALID_VALUE; compiling never calls
them), the CUDA runtime from the ``nvidia-cuda-runtime`` wheel, and TVM's CUDA runtime. Kernels
are compiled by NVRTC (``cuda-bindings`` + ``nvidia-cuda-nvrtc``), whose headers come from the
``nvidia-cuda-runtime`` / ``-cccl`` / ``-crt`` wheels laid out as a CUDA_PATH in Kiln's cache.
See /work/shared/reference/spike-cross.md section 3 for how this was found.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import importlib.util
import inspect
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from kiln.artifact.compat import host_arch
from kiln.cache import cache_dir
from kiln.codegen.runtime_bundle import _WHEEL_PLATFORMS, download_wheels
from kiln.codegen.toolchain import zig_cc
from kiln.errors import KilnError

#: Files a CUDA artifact carries beside the CPU runtime bundle (TVM's CUDA runtime and the
#: CUDA runtime it links); the device needs only the NVIDIA driver (libcuda.so.1).
CUDA_LIBS = ("libtvm_runtime_cuda.so", "libcudart.so.13")
#: The driver entry points libtvm_runtime_cuda.so imports (nm -D --undefined-only).
_DRIVER_SYMBOLS = ("cuDeviceGetName", "cuFuncSetAttribute", "cuLaunchKernelEx",
                   "cuModuleGetFunction", "cuModuleLoadData", "cuModuleUnload",
                   "cuTensorMapEncodeTiled")
_INSTALL = "pip install 'kilnml[cuda]' (cuda-bindings, nvidia-cuda-nvrtc, nvidia-cuda-runtime, " \
           "nvidia-cuda-cccl, nvidia-cuda-crt)"
_state: dict = {}


def _cu13_root() -> Path | None:
    """The ``nvidia/cu13`` folder of the NVIDIA wheels, or None when they are not installed."""
    spec = importlib.util.find_spec("nvidia")
    for base in (spec.submodule_search_locations or []) if spec else []:
        if (Path(base) / "cu13" / "lib" / "libcudart.so.13").exists():
            return Path(base) / "cu13"
    return None


def _stub_libcuda() -> Path:
    """A stub ``libcuda.so.1`` for this host (cached): enough for TVM's CUDA runtime to load."""
    path = cache_dir() / "cuda-stub" / host_arch() / "libcuda.so.1"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kiln-stub-") as tmp:
        src = Path(tmp) / "stub.c"
        body = "".join(f"int {name}(void) {{ return 1; }}\n" for name in _DRIVER_SYMBOLS)
        body += ("int cuGetErrorName(int e, const char** p) { if (p) *p = \"kiln stub\"; return 0; }\n"
                 "int cuGetErrorString(int e, const char** p) { if (p) *p = \"kiln stub libcuda: "
                 "no NVIDIA driver on the build host\"; return 0; }\n")
        src.write_text(body)
        out = Path(tmp) / "libcuda.so.1"
        zig_cc(host_arch(), ["-shared", "-fPIC", "-O2", "-s", "-Wl,-soname,libcuda.so.1",
                             "-o", str(out), str(src)], what="building the stub libcuda.so.1")
        os.replace(out, path)
    return path


def _load_driver() -> str:
    """Load the real NVIDIA driver if this host has one, else Kiln's stub; say which."""
    try:
        ctypes.CDLL("libcuda.so.1", mode=ctypes.RTLD_GLOBAL)
        return "nvidia driver"
    except OSError:
        ctypes.CDLL(str(_stub_libcuda()), mode=ctypes.RTLD_GLOBAL)
        return "stub (no NVIDIA driver on this host)"


def enable_cuda_codegen(*, intrinsics: bool = True) -> dict:
    """Make TVM compile CUDA kernels to cubins in this process; return what was used.
    ``intrinsics=False`` skips the tensor-core intrinsics (only scheduling needs them: a
    tuning worker that only builds or times kernels starts 10-20 s sooner).

    Raises ``missing_dependency`` when the CUDA wheels are not installed."""
    if not _state:
        _enable()
    if intrinsics:
        _import_tensor_intrinsics()
    return dict(_state)


def _enable() -> None:
    import tvm

    root = _cu13_root()
    try:
        from cuda.bindings import nvrtc
    except ImportError:
        nvrtc = None
    if root is None or nvrtc is None or not all(
            (root / "include" / sub).is_dir() for sub in ("cccl", "crt")):
        raise KilnError("missing_dependency", "compiling for an NVIDIA GPU needs NVRTC and the "
                        "CUDA 13 headers, which are not installed", hint=_INSTALL)
    driver = "already loaded"
    if tvm.get_global_func("ffi.Module.create.cuda", allow_missing=True) is None:
        driver = _load_driver()
        ctypes.CDLL(str(root / "lib" / "libcudart.so.13"), mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(str(Path(tvm.__file__).parent / "lib" / "libtvm_runtime_cuda.so"),
                    mode=ctypes.RTLD_GLOBAL)
    if tvm.get_global_func("ffi.Module.create.cuda", allow_missing=True) is None:
        raise KilnError("cuda_build_incomplete", "TVM's CUDA runtime did not load, so the build "
                        "would embed CUDA source instead of a cubin",
                        hint="reinstall apache-tvm; run with KILN_DEBUG=1")
    err, major, minor = nvrtc.nvrtcVersion()
    _state.update(driver=driver, nvrtc=f"{major}.{minor}", cuda_path=str(_cuda_path(root)),
                  cudart=importlib.metadata.version("nvidia-cuda-runtime"))


def _import_tensor_intrinsics() -> None:
    """Import TVM's tensor-core intrinsics (DLight's Matmul rule imports them for float16) with
    a frame-only ``inspect.stack``: each of their hundreds of ``T.prim_func`` decorators calls
    ``inspect.stack()``, whose source lookups scan every loaded module (98 s for this one import
    here; 9.6 s without the lookups). They are module-level functions, so the decorators need
    no source lines (``is_defined_in_class`` reads them only for class members)."""
    if "tvm.s_tir.tensor_intrin" in sys.modules:
        return
    real = inspect.stack

    def frames_only(context: int = 1) -> list:
        frame, out = sys._getframe(1), []
        while frame is not None:
            out.append(inspect.FrameInfo(frame, frame.f_code.co_filename, frame.f_lineno,
                                         frame.f_code.co_name, None, None))
            frame = frame.f_back
        return out

    inspect.stack = frames_only
    try:
        importlib.import_module("tvm.s_tir.tensor_intrin")
    finally:
        inspect.stack = real


def _cuda_path(root: Path) -> Path:
    """A CUDA_PATH for TVM's NVRTC driver: include/ and targets/<host>-linux/include (with
    cccl/) both pointing at the wheels' headers (TVM looks for CCCL only under targets/)."""
    folder = cache_dir() / "cuda-path" / importlib.metadata.version("nvidia-cuda-runtime")
    machine = os.uname().machine
    links = {folder / "include": root / "include",
             folder / "targets" / f"{machine}-linux" / "include": root / "include",
             folder / "targets" / "sbsa-linux" / "include": root / "include"}
    for link, dest in links.items():
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                link.symlink_to(dest, target_is_directory=True)
    return folder


@contextlib.contextmanager
def cuda_compile_env():
    """NVRTC mode and a CUDA_PATH with headers (a user's CUDA_PATH wins) for one build."""
    wanted = {"TVM_CUDA_COMPILE_MODE": "nvrtc",
              "CUDA_PATH": os.environ.get("CUDA_PATH") or _state["cuda_path"]}
    saved = {key: os.environ.get(key) for key in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def cuda_bundle_files(arch: str) -> dict[str, Path]:
    """``libtvm_runtime_cuda.so`` and ``libcudart.so.13`` for ``arch`` (cached)."""
    tvm_ver = importlib.metadata.version("apache-tvm")
    rt_ver = importlib.metadata.version("nvidia-cuda-runtime")
    folder = cache_dir() / "runtime" / f"cuda-tvm-{tvm_ver}-cudart-{rt_ver}" / arch
    if not all((folder / n).exists() for n in CUDA_LIBS):
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{arch}-", dir=folder.parent))
        try:
            if arch == host_arch():
                import tvm

                shutil.copy2(Path(tvm.__file__).parent / "lib" / CUDA_LIBS[0], staging)
                shutil.copy2(_cu13_root() / "lib" / CUDA_LIBS[1], staging)
            else:
                _download(arch, tvm_ver, rt_ver, staging)
            if not folder.exists():
                os.replace(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return {name: folder / name for name in CUDA_LIBS}


def _download(arch: str, tvm_ver: str, rt_ver: str, dest: Path) -> None:
    if arch not in _WHEEL_PLATFORMS:
        raise KilnError("target_not_yet_supported", f"no CUDA runtime wheels exist for {arch}",
                        hint="NVIDIA targets are x86_64 or aarch64")
    with tempfile.TemporaryDirectory(prefix="kiln-wheels-") as tmp:
        download_wheels(arch, [f"apache-tvm=={tvm_ver}", f"nvidia-cuda-runtime=={rt_ver}"],
                        tmp, "CUDA runtime")
        for wheel in Path(tmp).glob("*.whl"):
            with zipfile.ZipFile(wheel) as zf:
                for member in zf.namelist():
                    name = member.rsplit("/", 1)[-1]
                    if name in CUDA_LIBS and member.startswith(("tvm/lib/", "nvidia/")):
                        with zf.open(member) as src, open(dest / name, "wb") as dst:
                            shutil.copyfileobj(src, dst)
    missing = [n for n in CUDA_LIBS if not (dest / n).exists()]
    if missing:
        raise KilnError("runtime_bundle_unavailable", f"the {arch} wheels lack {missing}",
                        hint="report this with the apache-tvm and nvidia-cuda-runtime versions")
