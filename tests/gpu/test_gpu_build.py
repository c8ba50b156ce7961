"""NVIDIA GPU artifacts, checked without a GPU: real cubins for exactly the requested arch, the
host side for the right CPU, the manifest, the loud failure when the build would carry CUDA
source, and the clear refusal to load where no GPU is.

One tiny seeded MLP is compiled once per GPU arch (module-scoped), through the Python API.
"""

from __future__ import annotations

import json
import struct
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from kiln.codegen.cuda_build import MIN_DRIVER, check_device_code, inspect_device_code
from kiln.errors import KilnError
from conftest import run_kiln

pytest.importorskip("cuda.bindings", reason="needs the cuda extra: pip install 'kilnml[cuda]'")

#: case -> (target, platform, compiler options, GPU arch, host arch)
CASES = {
    "ml_g4dn": ("ml_g4dn", None, None, "sm_75", "x86_64"),
    "ml_p4d": ("ml_p4d", None, None, "sm_80", "x86_64"),
    "platform_sm86": (None, "LINUX/X86_64/NVIDIA",
                      {"gpu-code": "sm_86", "cuda-ver": "13.0", "trt-ver": "10.13.2"},
                      "sm_86", "x86_64"),
    "jetson_orin": ("jetson_orin", None, None, "sm_87", "aarch64"),
    "ml_g6": ("ml_g6", None, None, "sm_89", "x86_64"),
    "ml_p5": ("ml_p5", None, None, "sm_90", "x86_64"),
}
_ELF_MACHINE = {"x86_64": 62, "aarch64": 183}


def elf_machine(path: Path) -> int:
    data = path.read_bytes()[:20]
    assert data[:4] == b"\x7fELF", path
    return struct.unpack_from("<H", data, 18)[0]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    from kiln.examples.models import mlp

    path = tmp_path_factory.mktemp("gpu-model") / "mlp.onnx"
    onnx.save(mlp(seed=3, features=16, hidden=32, classes=4), path)
    return path


@pytest.fixture(scope="module")
def artifacts(model, tmp_path_factory):
    """case -> unpacked artifact folder, built on first use."""
    from kiln.compiler import compile_model

    root, built = tmp_path_factory.mktemp("gpu-artifacts"), {}

    def get(case: str) -> Path:
        if case not in built:
            target, platform, copts, _, _ = CASES[case]
            result = compile_model(model, target=target, platform=platform,
                                   compiler_options=copts, output=root / f"{case}.tar.gz")
            folder = root / case
            with tarfile.open(result.artifact) as tar:
                tar.extractall(folder, filter="data")
            built[case] = folder
        return built[case]

    return get


@pytest.mark.parametrize("case", list(CASES))
def test_artifact_holds_a_cubin_for_exactly_its_arch(artifacts, case):
    _, _, _, arch, host = CASES[case]
    folder = artifacts(case)
    code = inspect_device_code(folder / "model.so")
    assert code["cubin_arches"] == [arch] and code["cubins"] >= 1
    assert code["cuda_source"] is False and code["format"] == "cubin"
    manifest = json.loads((folder / "manifest.json").read_text())
    device = manifest["runtime"]["device"]
    assert (device["kind"], device["gpu_arch"]) == ("cuda", arch)
    assert device["cuda_version"].startswith("13.") and device["min_driver_version"] == MIN_DRIVER
    assert device["device_code"]["cubin_arches"] == [arch]
    assert manifest["target"]["tvm_target"]["kind"] == "cuda"
    assert manifest["target"]["tvm_target"]["arch"] == arch
    assert manifest["target"]["spec"]["accelerator"] == "nvidia"
    # no GPU here: verification is reported as skipped, never as passed
    report = manifest["verification"]
    assert report["verified"] is False and report["skipped"] is True
    assert "SKIPPED" in report["reason"] and "NOT compared" in report["reason"]
    assert f"device cuda {arch}" in (folder / "signature.txt").read_text().splitlines()
    for name in ("model.so", "libkiln_runtime.so", "kiln_run", "libtvm_runtime.so",
                 "libtvm_runtime_cuda.so", "libcudart.so.13"):
        assert elf_machine(folder / name) == _ELF_MACHINE[host], name
    assert set(manifest["runtime"]["cuda_libraries"]) == {"libtvm_runtime_cuda.so",
                                                          "libcudart.so.13"}


def test_neo_platform_options_are_recorded(artifacts):
    manifest = json.loads((artifacts("platform_sm86") / "manifest.json").read_text())
    assert manifest["compiler_options"] == {"gpu-code": "sm_86", "cuda-ver": "13.0",
                                            "trt-ver": "10.13.2"}
    assert manifest["target"]["spec"]["gpu_arch"] == "sm_86"
    # the host side of an x86_64 GPU artifact is built for a baseline CPU: no CPU flags needed
    assert manifest["target"]["tvm_target"]["host"]["mcpu"] == "x86-64-v2"
    assert manifest["runtime"]["requires_cpu_flags"] == []


def test_check_device_code_refuses_other_arch_and_cpu_libraries(artifacts, tmp_path):
    so = artifacts("ml_p5") / "model.so"
    with pytest.raises(KilnError) as info:
        check_device_code(so, "sm_80")
    assert info.value.code == "cuda_build_incomplete" and "sm_90, not sm_80" in info.value.message
    cpu_lib = tmp_path / "cpu.so"
    cpu_lib.write_bytes((artifacts("ml_p5") / "libkiln_runtime.so").read_bytes())
    with pytest.raises(KilnError) as info:
        check_device_code(cpu_lib, "sm_90")
    assert info.value.code == "cuda_build_incomplete" and "no GPU code" in info.value.message


def test_cuda_source_fallback_fails_loudly(model, tmp_path):
    """TVM_COMPILE_FORCE_FALLBACK=1 makes TVM embed CUDA source, as on a host without libcuda."""
    out = tmp_path / "fb.tar.gz"
    res = run_kiln("compile", str(model), "--target", "ml_p5", "-o", str(out),
                   env={"TVM_COMPILE_FORCE_FALLBACK": "1"})
    assert res.returncode == 34, res.stderr
    assert "error[cuda_build_incomplete]" in res.stderr and "CUDA C source" in res.stderr
    assert not out.exists()


def test_float16_build_for_the_gpu(tmp_path):
    """A 128x128 float16 matmul takes DLight's tensor-core rule (mma.h from nvidia-cuda-crt,
    TVM's tensor intrinsics imported fast by kiln.codegen.cuda_env)."""
    from onnx import TensorProto, helper, numpy_helper

    from kiln.compiler import compile_model

    w = np.random.default_rng(5).standard_normal((128, 128)).astype(np.float32) * 0.1
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 128, 128])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 128, 128])],
        [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              tmp_path / "mm.onnx")
    result = compile_model(tmp_path / "mm.onnx", target="ml_p5",
                           compiler_options={"dtype": "float16"}, output=tmp_path / "fp16.tar.gz")
    opts = result.manifest.compile_options
    assert opts["compute_dtype"] == "float16" and "float16" in opts["pipeline"]
    assert result.manifest.runtime["device"]["device_code"]["cubin_arches"] == ["sm_90"]
    assert result.manifest.verification["skipped"] is True


@pytest.mark.parametrize("options, code, words", [
    ({}, "invalid_compiler_options", "gpu-code"),
    ({"gpu-code": "sm_72"}, "target_not_yet_supported", "sm_75"),
    ({"gpu-code": "sm_86", "cuda-ver": "10.2"}, "invalid_compiler_options", "580"),
])
def test_nvidia_platform_options_are_checked_before_building(model, options, code, words):
    from kiln.compiler import compile_model

    with pytest.raises(KilnError) as info:
        compile_model(model, platform="LINUX/ARM64/NVIDIA", compiler_options=options)
    assert info.value.code == code and words in info.value.message + info.value.hint


@pytest.mark.parametrize("target", ["ml_p2", "ml_p3", "jetson_nano", "jetson_tx1", "jetson_tx2",
                                    "jetson_xavier"])
def test_old_nvidia_parts_are_refused_with_the_reason(model, target):
    from kiln.compiler import compile_model

    with pytest.raises(KilnError) as info:
        compile_model(model, target=target)
    assert info.value.code == "target_not_yet_supported"
    assert "sm_75" in info.value.message and "CUDA 13" in info.value.message


def test_loading_without_a_gpu_is_refused_with_a_code(artifacts):
    import kiln
    from kiln.artifact.gpu import gpu_problem

    folder = artifacts("ml_p5")
    if gpu_problem("sm_90") is None:
        pytest.skip("this machine has an sm_90 GPU")
    with pytest.raises(KilnError) as info:
        kiln.load(folder, device="gpu")
    assert info.value.code == "device_unavailable" and "sm_90" in info.value.message
    with pytest.raises(KilnError) as info:
        kiln.load(folder)                     # device="cpu" by default, as in DLR
    assert info.value.code == "target_mismatch"


def test_c_runtime_loads_the_cuda_bundle_and_asks_the_driver(artifacts, tmp_path):
    """With a driver that has no GPU (a stub libcuda.so.1 with cuInit), the C runtime loads the
    bundled libcudart.so.13 and libtvm_runtime_cuda.so, asks TVM whether CUDA device 0 exists,
    and refuses with device_unavailable (no crash)."""
    from kiln.artifact.compat import host_arch
    from kiln.codegen.toolchain import zig_cc

    if host_arch() != "x86_64":
        pytest.skip("the runner of the x86_64 artifact runs natively on x86_64 only")
    src = tmp_path / "drv.c"
    src.write_text("int cuInit(unsigned f) { return 100; }\n"
                   "int cuDriverGetVersion(int* v) { if (v) *v = 13000; return 0; }\n"
                   "int cuGetProcAddress_v2(void) { return 500; }\n"
                   "int cuDeviceGetCount(int* c) { if (c) *c = 0; return 100; }\n" +
                   "".join(f"int {n}(void) {{ return 100; }}\n" for n in (
                       "cuDeviceGetName", "cuFuncSetAttribute", "cuLaunchKernelEx",
                       "cuModuleGetFunction", "cuModuleLoadData", "cuModuleUnload",
                       "cuTensorMapEncodeTiled", "cuGetErrorName", "cuGetErrorString")))
    zig_cc("x86_64", ["-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o",
                      str(tmp_path / "libcuda.so.1"), str(src)], what="fake driver")
    folder = artifacts("ml_p5")
    np.save(tmp_path / "x.npy", np.ones((1, 16), np.float32))
    res = subprocess.run([str(folder / "kiln_run"), str(folder), "--input",
                          f"x={tmp_path / 'x.npy'}", "--output-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=120,
                         env={"LD_LIBRARY_PATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert res.returncode != 0
    assert "device_unavailable: CUDA device 0 is not available" in res.stderr + res.stdout


def test_kiln_run_refuses_without_a_gpu(artifacts, tmp_path):
    from kiln.artifact.gpu import gpu_problem

    if gpu_problem("sm_90") is None:
        pytest.skip("this machine has an sm_90 GPU")
    np.save(tmp_path / "x.npy", np.ones((1, 16), np.float32))
    res = run_kiln("run", str(artifacts("ml_p5")), "--input", f"x={tmp_path / 'x.npy'}",
                   "--output", str(tmp_path / "y.npz"))
    assert res.returncode == 42 and "error[device_unavailable]" in res.stderr, res.stderr


def test_c_runtime_device_helpers_with_the_cpu_standing_in(artifacts, tmp_path):
    """The C runtime's GPU-only code (device choice, tensor allocation, host<->device copies)
    run against the artifact's TVM runtime, with the CPU as the device."""
    from kiln.artifact.compat import host_arch
    from kiln.codegen.runtime_bundle import NATIVE_DIR, ffi_include_dir
    from kiln.codegen.toolchain import zig_cc

    if host_arch() != "x86_64":
        pytest.skip("links against the x86_64 artifact's libraries")
    folder = artifacts("ml_p5")
    exe = tmp_path / "device_path_check"
    zig_cc("x86_64", ["-O1", "-std=gnu11", f"-I{ffi_include_dir()}", f"-I{NATIVE_DIR}",
                      str(Path(__file__).parent / "device_path_check.c"), "-o", str(exe),
                      f"-L{folder}", "-Wl,--no-as-needed", "-ltvm_runtime", "-ltvm_ffi", "-ldl",
                      f"-Wl,-rpath,{folder}"], what="device path check")
    res = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stdout + res.stderr
