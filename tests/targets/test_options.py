"""Neo CompilerOptions: parsing, checking and applying them to a target."""

import pytest

from kiln.errors import KilnError
from kiln.targets import CompilerOptions, apply_compiler_options, get_target, parse_compiler_options


def _error(value):
    with pytest.raises(KilnError) as info:
        parse_compiler_options(value)
    assert info.value.code == "invalid_compiler_options"
    return info.value


def test_mcpu_from_json():
    assert parse_compiler_options('{"mcpu":"cortex-a72"}') == CompilerOptions(mcpu="cortex-a72")


def test_empty_inputs():
    for value in (None, "", "  ", "{}", {}):
        assert parse_compiler_options(value) == CompilerOptions()


def test_all_unknown_keys_in_one_error():
    error = _error('{"mcpus":"x","foo":1}')
    assert "'mcpus'" in error.message and "'foo'" in error.message
    assert "valid keys: ANDROID_PLATFORM, cuda-ver, dtype, gpu-code, mattr, mcpu, runtime, trt-ver" \
        in error.hint
    assert "'mcpu'" in error.hint


def test_single_unknown_key_suggestion():
    error = _error({"mcpus": "x"})
    assert error.message == "unknown compiler option 'mcpus'"
    assert error.hint.endswith("did you mean 'mcpu'?")


def test_neo_options_kiln_does_not_support():
    assert "Neo options Kiln does not support" in _error({"JETPACK_VERSION": "4.6"}).message


@pytest.mark.parametrize("value, key", [
    ('{"gpu-code":"sm_xx"}', "gpu-code"),
    ('{"mcpu":""}', "mcpu"),
    ('{"mcpu":"Cortex A72"}', "mcpu"),
    ('{"mattr":["neon"]}', "mattr"),
    ('{"mattr":5}', "mattr"),
    ('{"cuda-ver":"10"}', "cuda-ver"),
    ('{"trt-ver":"6"}', "trt-ver"),
    ('{"dtype":"int8"}', "dtype"),
    ('{"ANDROID_PLATFORM":19}', "ANDROID_PLATFORM"),
    ('{"ANDROID_PLATFORM":true}', "ANDROID_PLATFORM"),
])
def test_bad_values_name_the_key_and_value(value, key):
    error = _error(value)
    assert f"'{key}'" in error.message and "invalid value" in error.message
    assert error.hint.startswith(f"'{key}' must be")


def test_value_normalisation():
    assert parse_compiler_options('{"dtype":"long"}').dtype == "int64"
    assert parse_compiler_options({"DTYPE": "float"}).dtype == "float32"
    assert parse_compiler_options({"dtype": "float16"}).dtype == "float16"
    assert parse_compiler_options({"mattr": "+neon, +vfp4"}).mattr == ("+neon", "+vfp4")
    assert parse_compiler_options({"ANDROID_PLATFORM": "27"}).android_platform == 27
    opts = parse_compiler_options({"gpu_code": "sm_72", "trt-ver": "5.1.6", "cuda-ver": "10.0"})
    assert opts.to_dict() == {"gpu-code": "sm_72", "cuda-ver": "10.0", "trt-ver": "5.1.6"}


def test_same_key_twice_via_alias():
    assert "twice" in _error({"gpu-code": "sm_53", "gpu_code": "sm_62"}).message


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '"mcpu"', "{'mcpu': 'cortex-a72'}"])
def test_not_a_json_object(text):
    assert '"mcpu"' in _error(text).hint


def test_single_quotes_hint():
    assert "double quotes" in _error("{'mcpu': 'cortex-a72'}").hint


def test_callers_dict_is_not_mutated():
    given = {"gpu_code": "sm_53", "mattr": ["+neon"], "DTYPE": "long"}
    snapshot = {"gpu_code": "sm_53", "mattr": ["+neon"], "DTYPE": "long"}
    parse_compiler_options(given)
    assert given == snapshot


def test_gpu_code_on_a_cpu_target_is_rejected():
    with pytest.raises(KilnError) as info:
        apply_compiler_options(get_target("rasp4b"), parse_compiler_options({"gpu-code": "sm_87"}))
    assert info.value.code == "invalid_compiler_options"
    assert "NVIDIA" in info.value.message


def test_android_platform_needs_android():
    with pytest.raises(KilnError) as info:
        apply_compiler_options(get_target("rasp4b"), CompilerOptions(android_platform=27))
    assert "Android" in info.value.message
    assert apply_compiler_options(get_target("qcs605"), CompilerOptions(android_platform=30)).os == "android"


def test_mcpu_override_changes_the_fingerprint():
    spec = get_target("rasp4b")
    changed = apply_compiler_options(spec, parse_compiler_options({"mcpu": "cortex-a53", "mattr": ["+neon"]}))
    assert changed.mcpu == "cortex-a53" and changed.name == "rasp4b"
    assert changed.fingerprint() != spec.fingerprint()
    assert apply_compiler_options(spec, CompilerOptions()).fingerprint() == spec.fingerprint()


def test_gpu_code_overrides_gpu_arch():
    spec = apply_compiler_options(get_target("ml_g4dn"), CompilerOptions(gpu_code="sm_80"))
    assert spec.gpu_arch == "sm_80"
