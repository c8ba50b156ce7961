"""``kiln.load(path)``: a DLR-compatible model over the artifact's C API (``libkiln_runtime.so``)."""

from __future__ import annotations

import ctypes
import shutil
import tempfile
import threading
import weakref
from pathlib import Path

import numpy as np

from kiln.artifact import read_manifest, unpack
from kiln.artifact.compat import check_has_cpu_code, check_native
from kiln.artifact.digests import check_digests
from kiln.artifact.manifest import MANIFEST_NAME
from kiln.errors import KilnError
from kiln.signature import conform_inputs

_c_int64_p = ctypes.POINTER(ctypes.c_int64)
_SIGNATURES = {
    "kiln_model_create_on": ([ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int,
                              ctypes.POINTER(ctypes.c_void_p)], ctypes.c_int),
    "kiln_model_destroy": ([ctypes.c_void_p], None),
    "kiln_model_set_input": ([ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t],
                             ctypes.c_int),
    "kiln_model_run": ([ctypes.c_void_p], ctypes.c_int),
    "kiln_model_output_nbytes": ([ctypes.c_void_p, ctypes.c_int], ctypes.c_size_t),
    "kiln_model_output_shape": ([ctypes.c_void_p, ctypes.c_int, _c_int64_p,
                                 ctypes.POINTER(ctypes.c_int)], ctypes.c_int),
    "kiln_model_get_output": ([ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t],
                              ctypes.c_int),
    "kiln_last_error": ([], ctypes.c_char_p),
    "kiln_model_library": ([ctypes.c_void_p], ctypes.c_char_p),
}


#: the standalone runtime's per-kernel timing and pool figures (the TVM-runtime bundle has no
#: such symbols, nor have standalone runtimes built before them)
_STANDALONE_SIGNATURES = {
    "kiln_model_profile": ([ctypes.c_void_p, ctypes.c_int], ctypes.c_int),
    "kiln_model_profile_entry": ([ctypes.c_void_p, ctypes.c_int,
                                  ctypes.POINTER(ctypes.c_char_p),
                                  ctypes.POINTER(ctypes.c_double),
                                  ctypes.POINTER(ctypes.c_long)], ctypes.c_int),
    "kiln_standalone_stats": ([ctypes.POINTER(ctypes.c_long), ctypes.POINTER(ctypes.c_int),
                               ctypes.POINTER(ctypes.c_long)], None),
    "kiln_standalone_block_ms": ([], ctypes.c_double),
}


def _bind(lib: ctypes.CDLL) -> None:
    for name, (args, res) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res
    for name, (args, res) in _STANDALONE_SIGNATURES.items():
        fn = getattr(lib, name, None)
        if fn is not None:
            fn.argtypes, fn.restype = args, res


#: Standalone runtime libraries loaded in this process, by sha256. Models whose artifacts carry
#: the same ``libkiln_runtime.so`` share one copy, and so one thread pool: a pool's idle worker
#: spins for its block time (``KILN_SPIN_MS``) after a run, and a second pool's runs would pay
#: for it (twice as long on 2 cores). The library keeps no per-model state outside its handles.
_SHARED_LIBRARIES: dict[str, ctypes.CDLL] = {}
_SHARED_LOCK = threading.Lock()


def _runtime_library(path: Path, manifest) -> ctypes.CDLL:
    name = manifest.runtime["library"]
    file = str(path.resolve() / name)
    if manifest.runtime.get("kind") != "standalone":
        lib = ctypes.CDLL(file)
        _bind(lib)
        return lib
    key = manifest.files[name]["sha256"]  # checked against the file by check_digests
    with _SHARED_LOCK:
        lib = _SHARED_LIBRARIES.get(key)
        if lib is None:
            lib = ctypes.CDLL(file)
            _bind(lib)
            _SHARED_LIBRARIES[key] = lib
    return lib


_GPU_HINT = "run it on a machine with the NVIDIA GPU it was built for and driver >= 580 " \
    "(nvidia-smi shows both), or compile for this machine's CPU"


def _check_gpu(device: dict, dev_id: int) -> None:
    """Refuse a GPU artifact here before loading anything when no suitable GPU is present."""
    from kiln.artifact.gpu import gpu_problem

    problem = gpu_problem(device.get("gpu_arch"), dev_id)
    if problem:
        raise KilnError("device_unavailable", f"cannot load the {device.get('gpu_arch')} "
                        f"artifact here: {problem}", hint=_GPU_HINT)


def _destroy(lib: ctypes.CDLL, handle: ctypes.c_void_p, tmp: str | None) -> None:
    if handle:
        lib.kiln_model_destroy(handle)
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)


class Model:
    """A loaded artifact. One instance per thread (like DLR).

    Parameters
    ----------
    path : str or Path
        An artifact ``.tar.gz`` or the folder it was unpacked into.
    dev_type : {"cpu", "gpu"}
        Where to run. Artifacts for another arch or accelerator are refused
        (``target_mismatch``); a GPU artifact on a machine without a suitable NVIDIA GPU or
        driver is refused with ``device_unavailable``. Inputs and outputs are numpy arrays
        in host memory either way (the C API copies them to and from the GPU).
    dev_id : int
        Which GPU (CUDA device index).
    """

    def __init__(self, path: str | Path, dev_type: str = "cpu", dev_id: int = 0) -> None:
        path = Path(path)
        if not path.exists():
            raise KilnError("file_not_found", f"artifact {str(path)!r} does not exist",
                            hint="give the .tar.gz written by `kiln compile`")
        tmp = tempfile.mkdtemp(prefix="kiln-model-") if path.is_file() else None
        try:
            self._open(unpack(path, Path(tmp)) if tmp else path, dev_type, dev_id)
        except BaseException:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._finalizer = weakref.finalize(self, _destroy, self._lib, self._handle, tmp)

    def _open(self, path: Path, dev_type: str, dev_id: int = 0) -> None:
        self._dir = path
        self.manifest = read_manifest(path)
        check_has_cpu_code(self.manifest)
        check_digests(path, self.manifest.files, exclude=(MANIFEST_NAME,))
        gpu = self.manifest.runtime.get("device")
        # a GPU artifact's host side is built for a baseline CPU: no CPU flags to check
        check_native(self.manifest.target["spec"], device=dev_type,
                     accelerator=self.manifest.accelerator,
                     fallback=bool(self.manifest.runtime.get("fallback_library") or gpu))
        if gpu:
            _check_gpu(gpu, dev_id)
        self._lib = _runtime_library(path, self.manifest)
        self._handle = ctypes.c_void_p()
        self._check(self._lib.kiln_model_create_on(str(path.resolve()).encode(), dev_type.encode(),
                                                   dev_id, ctypes.byref(self._handle)),
                    "loading the model")
        #: the model library in use: "model.so", or the portable fallback on an older CPU
        self.library = self._lib.kiln_model_library(self._handle).decode()
        self._inputs = self.manifest.signature.inputs
        self._outputs = self.manifest.signature.outputs

    def _check(self, rc: int, what: str) -> None:
        if rc != 0:
            msg = (self._lib.kiln_last_error() or b"").decode(errors="replace")
            code, _, rest = msg.partition(": ")
            if code in ("device_unavailable", "target_mismatch"):
                raise KilnError(code, f"{what}: {rest}", hint=_GPU_HINT)
            raise KilnError("run_failed", f"{what}: {msg}", hint="check the inputs; report the "
                            "artifact if this persists")

    # ---- running -------------------------------------------------------------------------
    def run(self, x) -> list[np.ndarray]:
        """Run on one array (single-input models) or a ``{name: array}`` dict; returns a list."""
        if not isinstance(x, dict):
            if len(self._inputs) != 1:
                raise KilnError("invalid_input", f"the model has {len(self._inputs)} inputs; pass "
                                "a dict of name to array", hint=f"names: {self.get_input_names()}")
            x = {self._inputs[0].name: x}
        arrays = conform_inputs(x, self.manifest.signature)
        for i, t in enumerate(self._inputs):
            arr = arrays[t.name]
            self._check(self._lib.kiln_model_set_input(self._handle, i, arr.ctypes.data,
                                                       arr.nbytes), f"setting input {t.name!r}")
        self._check(self._lib.kiln_model_run(self._handle), "running the model")
        return [self._output(i) for i in range(len(self._outputs))]

    def thread_pool(self) -> dict | None:
        """The standalone runtime's pool: ``threads`` (the caller included) and ``spin_ms``, how
        long an idle worker spins for the next kernel or run before it sleeps (``KILN_SPIN_MS``,
        default 100). ``threads`` is 0 until the first run starts the pool. ``None`` for a
        TVM-runtime artifact."""
        stats = getattr(self._lib, "kiln_standalone_stats", None)
        block = getattr(self._lib, "kiln_standalone_block_ms", None)
        if stats is None or block is None:
            return None
        threads = ctypes.c_int()
        stats(None, ctypes.byref(threads), None)
        return {"threads": threads.value, "spin_ms": round(block(), 3)}

    def profile(self, x, runs: int = 20, warmup: int = 3) -> list[dict]:
        """Time every kernel over ``runs`` runs on ``x`` (after ``warmup`` untimed ones):
        one dict per kernel, slowest first, with ``kernel``, ``calls`` (per run), ``mean_us``
        (per run, all its calls) and ``share`` of the kernels' total. Standalone artifacts
        only (the default on CPUs)."""
        if getattr(self._lib, "kiln_model_profile", None) is None:
            raise KilnError("profile_unsupported", "per-kernel profiles need the standalone "
                            "runtime; this artifact uses the TVM runtime",
                            hint="compile for a CPU target with the default executor "
                                 "(standalone)")
        if runs < 1:
            raise KilnError("invalid_options", f"runs must be at least 1, got {runs}",
                            hint="e.g. runs=20")
        for _ in range(warmup):
            self.run(x)
        n = self._lib.kiln_model_profile(self._handle, 1)
        self._check(-1 if n < 0 else 0, "starting the profile")
        try:
            for _ in range(runs):
                self.run(x)
            totals: dict[str, list] = {}
            name, secs, done = ctypes.c_char_p(), ctypes.c_double(), ctypes.c_long()
            for i in range(n):
                self._check(self._lib.kiln_model_profile_entry(
                    self._handle, i, ctypes.byref(name), ctypes.byref(secs), ctypes.byref(done)),
                    "reading the profile")
                entry = totals.setdefault(name.value.decode(), [0, 0.0])
                entry[0] += 1
                entry[1] += secs.value
        finally:
            self._lib.kiln_model_profile(self._handle, 0)
        total = sum(t for _, t in totals.values()) or 1.0
        timed = done.value or runs  # the runs the runtime timed (equal to ``runs``)
        rows = [{"kernel": k, "calls": c, "mean_us": t / timed * 1e6, "share": t / total}
                for k, (c, t) in totals.items()]
        return sorted(rows, key=lambda r: -r["mean_us"])

    def _output(self, i: int) -> np.ndarray:
        shape, ndim = (ctypes.c_int64 * 16)(), ctypes.c_int()
        self._check(self._lib.kiln_model_output_shape(self._handle, i, shape, ctypes.byref(ndim)),
                    "reading an output shape")
        out = np.empty(tuple(shape[: ndim.value]), dtype=self._outputs[i].dtype)
        self._check(self._lib.kiln_model_get_output(self._handle, i, out.ctypes.data, out.nbytes),
                    "reading an output")
        return out

    # ---- DLR-compatible introspection ---------------------------------------------------
    def get_input_names(self) -> list[str]:
        return [t.name for t in self._inputs]

    def get_input_name(self, index: int) -> str:
        return self._inputs[index].name

    def get_input_dtypes(self) -> list[str]:
        return [t.dtype for t in self._inputs]

    def get_input_dtype(self, index: int) -> str:
        return self._inputs[index].dtype

    def get_input_shapes(self) -> list[tuple[int, ...]]:
        return [t.shape for t in self._inputs]

    def get_output_names(self) -> list[str]:
        return [t.name for t in self._outputs]

    def get_output_name(self, index: int) -> str:
        return self._outputs[index].name

    def get_output_dtypes(self) -> list[str]:
        return [t.dtype for t in self._outputs]

    def get_output_dtype(self, index: int) -> str:
        return self._outputs[index].dtype

    def get_output_shapes(self) -> list[tuple[int, ...]]:
        return [t.shape for t in self._outputs]

    def has_metadata(self) -> bool:
        return True

    def get_version(self) -> str:
        return self.manifest.kiln_version

    def close(self) -> None:
        """Free the native model now rather than at garbage collection."""
        self._finalizer()


def load(path: str | Path, device: str = "cpu", device_id: int = 0) -> Model:
    """Load an artifact (``.tar.gz`` or unpacked folder) for this machine; ``device="gpu"``
    runs an NVIDIA artifact on CUDA device ``device_id``."""
    return Model(path, dev_type=device, dev_id=device_id)
