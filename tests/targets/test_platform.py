"""Neo TargetPlatform strings -> generic TargetSpecs."""

import pytest

from kiln.errors import KilnError
from kiln.targets import parse_platform, resolve_platform, resolve_target
from kiln.targets.platform import VALID_COMBOS
from kiln.targets.spec import spec_problems


def _error(text):
    with pytest.raises(KilnError) as info:
        parse_platform(text)
    assert info.value.code == "unknown_target"
    return info.value


def test_linux_x86_64_is_verified():
    spec = parse_platform("LINUX/X86_64")
    assert (spec.name, spec.os, spec.arch, spec.status) == ("linux_x86_64", "linux", "x86_64", "verified")
    assert spec.tvm_target() == {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64-v3"}
    assert spec.neo is False and spec.reason


def test_linux_arm64_lowercase_is_verified():
    spec = parse_platform("linux/arm64")
    assert (spec.name, spec.arch, spec.status, spec.mattr) == ("linux_arm64", "aarch64", "verified", ("+neon",))
    assert "qemu-aarch64" in spec.reason


def test_armhf_is_hard_float_and_verified_with_the_standalone_executor():
    spec = parse_platform("LINUX/ARM_EABIHF")
    assert (spec.arch, spec.float_abi, spec.status) == ("armv7", "hard", "verified")
    assert spec.to_dict()["default_options"] == {"runtime": "standalone"}
    assert spec.triple == "armv7a-linux-gnueabihf"
    assert spec.tvm_target()["mfloat-abi"] == "hard"
    assert "armv7" in spec.reason


def test_soft_float_arm_on_linux_and_android():
    linux = parse_platform("LINUX/ARM_EABI")
    android = parse_platform("ANDROID/ARM_EABI")
    assert (linux.triple, linux.float_abi) == ("armv7a-linux-gnueabi", "soft")
    assert (android.triple, android.float_abi, android.os) == ("armv7a-linux-androideabi", "soft", "android")
    assert android.status == "unsupported" and "NDK" in android.reason


def test_nvidia_platform():
    spec = parse_platform("LINUX/X86_64/NVIDIA")
    assert (spec.name, spec.accelerator, spec.status) == ("linux_x86_64_nvidia", "nvidia", "codegen")
    assert "gpu-code" in spec.reason and spec.tree_status == "unsupported"


def test_android_x86_uses_an_i686_triple():
    assert parse_platform("ANDROID/X86").triple == "i686-linux-android"


def test_windows_is_not_a_neo_os():
    error = _error("WINDOWS/X86_64")
    assert "LINUX" in error.hint and "ANDROID" in error.hint
    assert "x86_win64" in error.hint


@pytest.mark.parametrize("text", ["LINUX/ARM_EABIHF/NVIDIA", "LINUX/X86", "LINUX/X86/MALI", "ANDROID/ARM64/NVIDIA"])
def test_invalid_combinations_list_the_valid_ones(text):
    error = _error(text)
    assert "not a combination" in error.message
    assert "LINUX/ARM64/NVIDIA" in error.hint and "ANDROID/ARM_EABI" in error.hint


@pytest.mark.parametrize("text", ["LINUX", "", "LINUX/ARM64/NVIDIA/EXTRA", "LINUX//NVIDIA"])
def test_malformed_platforms(text):
    assert "OS/ARCH" in _error(text).hint


def test_unknown_enum_values():
    assert "ARM_EABIHF" in _error("LINUX/ARMV7").hint
    assert "INTEL_GRAPHICS" in _error("LINUX/ARM64/TPU").hint
    assert "undocumented" in _error("LINUX/ARM64/NNA").message


def test_every_documented_combination_builds_a_sound_spec():
    names = set()
    for (os_value, accel), arches in VALID_COMBOS.items():
        for arch in arches:
            spec = resolve_platform(os_value.lower(), arch, accel)
            assert spec_problems(spec) == [], spec.name
            assert spec.status == "unsupported" or (spec.os, spec.accelerator) == ("linux", None) \
                or (spec.status, spec.accelerator) == ("codegen", "nvidia")
            names.add(spec.name)
    assert len(names) == sum(len(arches) for arches in VALID_COMBOS.values())


def test_resolve_target_needs_exactly_one_of_name_and_platform():
    for name, platform in ((None, None), ("rasp4b", "LINUX/ARM64")):
        with pytest.raises(KilnError) as info:
            resolve_target(name, platform, None)
        assert info.value.code == "unknown_target"


def test_resolve_target_merges_default_options():
    spec, options = resolve_target("jetson_nano", None, '{"gpu-code": "sm_87"}')
    assert spec.gpu_arch == "sm_87"
    assert options.to_dict() == {"gpu-code": "sm_87", "cuda-ver": "10.0", "trt-ver": "5.0.6"}
    spec, options = resolve_target(None, "linux/arm64", {"mcpu": "cortex-a72"})
    assert (spec.name, spec.mcpu) == ("linux_arm64", "cortex-a72")
    spec, _ = resolve_target(None, "LINUX/ARM64/NVIDIA", {"gpu-code": "sm_87"})
    assert spec.gpu_arch == "sm_87"
