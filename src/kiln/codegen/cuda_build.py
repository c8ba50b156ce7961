"""Build a Relax module for an NVIDIA GPU: kernels as a cubin (NVRTC), host side linked by zig.

The build is checked after export: the library must embed a cubin for exactly the requested
``sm_XX`` and no CUDA source, else ``cuda_build_incomplete`` (TVM would otherwise ship CUDA C
source that only a Python TVM with a compiler on the device could load).
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

from kiln.codegen.runtime_bundle import tvm_runtime_libs
from kiln.codegen.toolchain import ZigSharedLinker
from kiln.errors import KilnError
from kiln.importers.base import ImportedModel
from kiln.options import CompileOptions
from kiln.targets import TargetSpec

#: The GPU arches nvcc 13 / NVRTC 13 accept (``nvcc --list-gpu-code``).
CUDA_ARCHES = ("sm_75", "sm_80", "sm_86", "sm_87", "sm_88", "sm_89", "sm_90", "sm_100",
               "sm_103", "sm_110", "sm_120", "sm_121")
CUDA_MAJOR = 13
#: The oldest Linux driver of CUDA 13.0 (GA); CUDA 13.x runtimes run on any r580+ driver.
MIN_DRIVER = "580.65.06"
#: The CPU baseline of the host side of x86_64 GPU artifacts (it only launches kernels).
HOST_MCPU_X86 = "x86-64-v2"
_EM_CUDA = 190


def check_cuda_options(spec: TargetSpec, cuda_ver: str | None) -> None:
    """Refuse a GPU arch or CUDA version this release cannot build, before importing anything."""
    if not spec.gpu_arch:
        raise KilnError("invalid_compiler_options", f"{spec.name!r} needs the GPU arch: give "
                        "--compiler-options '{\"gpu-code\": \"sm_XX\"}'",
                        hint=f"one of {', '.join(CUDA_ARCHES)} (nvidia-smi --query-gpu="
                             "compute_cap tells it: 8.6 = sm_86)")
    if spec.gpu_arch not in CUDA_ARCHES:
        raise KilnError("target_not_yet_supported", f"{spec.name!r}: gpu-code {spec.gpu_arch} "
                        f"cannot be built: CUDA {CUDA_MAJOR} (NVRTC) accepts only "
                        f"{', '.join(CUDA_ARCHES)}", hint="older GPUs need an older toolchain "
                        "than TVM 0.27's wheels link; see docs/gpu.md")
    if cuda_ver is not None and cuda_ver.split(".")[0] != str(CUDA_MAJOR):
        raise KilnError("invalid_compiler_options", f"cuda-ver {cuda_ver} cannot be honoured: "
                        f"Kiln builds CUDA {CUDA_MAJOR} artifacts (TVM 0.27's CUDA runtime links "
                        f"libcudart.so.{CUDA_MAJOR}), which need NVIDIA driver >= {MIN_DRIVER}",
                        hint=f"drop cuda-ver or give {CUDA_MAJOR}.0; update the device's driver")


def host_spec(spec: TargetSpec) -> TargetSpec:
    """The CPU the host side is built for: x86_64 GPU artifacts use a baseline CPU (the host
    side only launches kernels), so they run on every instance's CPU."""
    if spec.arch != "x86_64":
        return spec
    return dataclasses.replace(spec, mcpu=HOST_MCPU_X86, mattr=(), simd="sse4.2")


def cuda_target(spec: TargetSpec) -> dict:
    """The TVM target dict: CUDA for ``spec.gpu_arch`` with the CPU as host."""
    return {"kind": "cuda", "arch": spec.gpu_arch, "host": host_spec(spec).tvm_target()}


def build_cuda_library(imported: ImportedModel, spec: TargetSpec, options: CompileOptions,
                       out_dir: Path, *, name: str = "model.so", dtype: str = "float32"):
    """Compile ``imported`` for ``spec``'s GPU into ``out_dir/name`` and check its device code."""
    import tvm

    from kiln.codegen.cuda_env import cuda_compile_env, enable_cuda_codegen
    from kiln.codegen.tvm_build import CompiledModel, export_library
    from kiln.optimize.cuda_pipeline import cuda_pipeline

    check_cuda_options(spec, None)
    env = enable_cuda_codegen()
    target_dict = cuda_target(spec)
    target = tvm.target.Target(target_dict)
    mod = imported.mod
    tuned, applied = _tuning_pass(spec, options)
    try:
        if dtype == "float16":
            # convolutions and matmuls read float16, accumulate in float32 (tensor cores)
            mod = tvm.relax.transform.ToMixedPrecision(out_dtype="float32")(mod)
        # the pipeline *name*: TVM then picks its CUDA pipeline with DLight GPU schedules; with
        # a tuning database, the same passes with the database applied before DLight
        with cuda_compile_env(), target:
            executable = tvm.compile(mod, target, relax_pipeline="default" if tuned is None
                                     else cuda_pipeline(target, tuned))
    except KilnError:
        raise
    except Exception as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        error = next((ln for ln in lines if "error" in ln.lower()), lines[-1] if lines else "")
        raise KilnError("compile_failed", f"TVM failed to compile the model for {spec.name} "
                        f"({spec.gpu_arch}): {error[:500]}", hint="run with KILN_DEBUG=1 for "
                        "the full trace", details=str(exc)) from None
    library = export_library(executable, out_dir / name,
                             ZigSharedLinker(spec.arch, spec.triple, tvm_runtime_libs(spec.arch)))
    code = check_device_code(library, spec.gpu_arch)
    device = {"kind": "cuda", "gpu_arch": spec.gpu_arch, "cuda_version": env["nvrtc"],
              "cudart_version": env["cudart"], "min_driver_version": MIN_DRIVER,
              "device_code": code, "compiled_with": f"NVRTC {env['nvrtc']}",
              "build_host_driver": env["driver"], "tvm_target": target_dict}
    pipeline = "cuda default (DLight GPU schedules)" + ("+float16" if dtype == "float16" else "")
    if tuned is not None:
        pipeline += f"+tuned ({len(applied)} kernels from the tuning database)"
    return CompiledModel(library=library, tvm_target=target_dict, pipeline=pipeline,
                         device=device)


def _tuning_pass(spec: TargetSpec, options: CompileOptions):
    """The pass applying ``spec``'s tuning database (None when it has none or the compile
    options turn it off) and the list it fills with the kernels it scheduled."""
    from kiln.optimize.tune_db import database_dir

    applied: list[str] = []
    if not options.use_tuning_db or database_dir(spec) is None:
        return None, applied
    from kiln.optimize.tuning import apply_database

    return apply_database(spec, applied), applied


def inspect_device_code(path: Path) -> dict:
    """What device code a model library embeds: the sm arches of its cubins (CUDA ELF images,
    e_machine EM_CUDA), and whether it carries CUDA C source (TVM's fallback module)."""
    data = Path(path).read_bytes()
    arches = []
    at = data.find(b"\x7fELF", 1)
    while at > 0:
        arch = _cubin_arch(data, at)
        if arch is not None:
            arches.append(arch)
        at = data.find(b"\x7fELF", at + 4)
    source = b"__global__" in data or b'extern "C" __global__' in data
    return {"format": "cubin" if arches else ("cuda source" if source else "none"),
            "cubin_arches": sorted(set(arches)), "cubins": len(arches), "cuda_source": source}


def _cubin_arch(data: bytes, at: int) -> str | None:
    if len(data) < at + 64 or data[at + 4] != 2:          # 64-bit ELF only
        return None
    (machine,) = struct.unpack_from("<H", data, at + 18)
    if machine != _EM_CUDA:
        return None
    (flags,) = struct.unpack_from("<I", data, at + 48)
    abi_version = data[at + 8]
    # CUDA >= 12.8 ELF (ABI version 8): the SM in bits 8-15; before: in bits 0-7
    sm = (flags >> 8) & 0xFF if abi_version >= 8 else flags & 0xFF
    return f"sm_{sm}"


def check_device_code(path: Path, gpu_arch: str) -> dict:
    """Raise ``cuda_build_incomplete`` unless ``path`` embeds cubins for exactly ``gpu_arch``
    and no CUDA source; return :func:`inspect_device_code`'s report."""
    code = inspect_device_code(path)
    problem = None
    if code["cuda_source"]:
        problem = "it embeds CUDA C source (TVM's fallback module), which the device cannot load"
    elif not code["cubins"]:
        problem = "it embeds no GPU code at all (the GPU pipeline did not schedule any kernel)"
    elif code["cubin_arches"] != [gpu_arch]:
        problem = f"its cubins are for {', '.join(code['cubin_arches'])}, not {gpu_arch}"
    if problem:
        raise KilnError("cuda_build_incomplete", f"the GPU library for {gpu_arch} is unusable: "
                        f"{problem}", hint="unset TVM_COMPILE_FORCE_FALLBACK; check that "
                        "cuda-bindings and nvidia-cuda-nvrtc are installed (pip install "
                        "'kilnml[cuda]'); run with KILN_DEBUG=1",
                        details=str(code))
    return code


def cubin_kernels(path: Path) -> dict[str, tuple[int, int, int]]:
    """The kernels of the first cubin a library embeds and each one's maximum block size
    (``__launch_bounds__``: the EIATTR_MAX_THREADS attribute of its ``.nv.info.<kernel>``
    section), read from the ELF without cuobjdump."""
    data = Path(path).read_bytes()
    at = data.find(b"\x7fELF", 1)
    while at > 0 and _cubin_arch(data, at) is None:
        at = data.find(b"\x7fELF", at + 4)
    if at < 0:
        return {}
    (shoff,) = struct.unpack_from("<Q", data, at + 0x28)
    entsize, count, strndx = struct.unpack_from("<HHH", data, at + 0x3A)
    sections = [struct.unpack_from("<IIQQQQ", data, at + shoff + i * entsize)
                for i in range(count)]
    names = at + sections[strndx][4]
    kernels = {}
    for name_at, _, _, _, offset, size in sections:
        name = data[names + name_at:data.index(b"\0", names + name_at)].decode()
        if name.startswith(".nv.info."):
            kernels[name[len(".nv.info."):]] = _max_threads(data, at + offset, size)
    return kernels


def _max_threads(data: bytes, start: int, size: int) -> tuple[int, int, int]:
    pos, found = start, (0, 0, 0)
    while pos < start + size:
        fmt, attr = data[pos], data[pos + 1]
        if fmt != 4:            # EIFMT_NVAL / BVAL / HVAL: 4 bytes in all
            pos += 4
            continue
        (length,) = struct.unpack_from("<H", data, pos + 2)
        if attr == 0x05:        # EIATTR_MAX_THREADS: x, y, z
            found = struct.unpack_from("<III", data, pos + 4)
        pos += 4 + length
    return found
