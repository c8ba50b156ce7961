"""The device catalog: contents, lookup, TargetSpec behaviour and import-time validation."""

import ast
import json
from pathlib import Path

import pytest

from kiln.errors import KilnError
from kiln.targets import TargetSpec, get_target, list_targets, validate_catalog
from kiln.targets.catalog import NEO_TARGET_DEVICES, catalog_rows
from kiln.targets.docs import render
from kiln.targets.spec import STATUSES

EXTRA = ("rasp5", "jetson_orin", "ml_c7g", "ml_m7g", "kv260", "zcu102", "zcu104", "am62a", "riscv64")
ROOT = Path(__file__).resolve().parents[2]


def test_every_neo_device_loads_with_status_and_reason():
    assert len(NEO_TARGET_DEVICES) == 37
    for name in NEO_TARGET_DEVICES:
        spec = get_target(name)
        assert spec.neo is True
        assert spec.status in STATUSES
        assert spec.reason.strip()


def test_exactly_37_neo_rows_and_the_extra_devices():
    specs = list_targets()
    assert sum(spec.neo for spec in specs) == 37
    for name in EXTRA:
        assert get_target(name).neo is False
    assert [spec.name for spec in specs[:3]] == ["lambda", "ml_m4", "ml_m5"]  # catalog order


def test_status_follows_what_kiln_can_run_today():
    for spec in list_targets():
        if spec.status == "verified" and spec.arch in ("armv7", "riscv64"):
            # no TVM runtime there: verified only with Kiln's standalone executor as default
            assert dict(spec.default_options).get("runtime") == '"standalone"', spec.name
        elif spec.status == "verified":
            assert (spec.os, spec.arch) in {("linux", "x86_64"), ("linux", "aarch64")}, spec.name
    assert get_target("rasp4b").status == "verified"
    assert get_target("kv260").status == "verified"
    assert "Vitis AI" in get_target("kv260").reason
    assert get_target("rasp3b").status == "verified"  # standalone executor, under qemu-arm
    assert "sm_53" in get_target("jetson_nano").reason
    assert get_target("coreml").status == "unsupported"


def test_get_target_is_case_insensitive_and_knows_aliases():
    assert get_target("RASP4B").name == "rasp4b"
    assert get_target(" rasp4b64 ").name == "rasp4b"


def test_unknown_target_suggests_close_names():
    with pytest.raises(KilnError) as info:
        get_target("raspi4")
    assert info.value.code == "unknown_target"
    assert "raspi4" in info.value.message
    assert "rasp4b" in info.value.hint
    assert "kiln targets" in info.value.hint


def test_unknown_target_with_nothing_close():
    with pytest.raises(KilnError) as info:
        get_target("zzzzzzzz")
    assert "did you mean" not in info.value.hint
    assert "kiln targets" in info.value.hint


def test_fingerprint_is_stable_and_tracks_codegen_fields():
    spec = get_target("rasp4b")
    assert spec.fingerprint() == get_target("rasp4b").fingerprint()
    assert spec.fingerprint().startswith("sha256:") and len(spec.fingerprint()) == 7 + 64
    assert spec.with_overrides(mcpu="cortex-a53").fingerprint() != spec.fingerprint()
    # the description is not code: changing it keeps the fingerprint
    import dataclasses
    assert dataclasses.replace(spec, description="x").fingerprint() == spec.fingerprint()


def test_tvm_target_dicts():
    assert get_target("rasp3b").tvm_target() == {
        "kind": "llvm", "mtriple": "armv8a-linux-gnueabihf", "mcpu": "cortex-a53", "mattr": ["+neon"],
        "mfloat-abi": "hard", "num-cores": 4,
    }
    riscv = get_target("riscv64").tvm_target()
    assert riscv["mabi"] == "lp64d" and riscv["mtriple"] == "riscv64-linux-gnu"
    c5 = get_target("ml_c5").tvm_target()
    assert c5 == {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "skylake-avx512"}


def test_to_dict_is_json_and_decodes_default_options():
    data = get_target("jetson_nano").to_dict()
    json.dumps(data)
    assert data["default_options"] == {"gpu-code": "sm_53", "trt-ver": "5.0.6", "cuda-ver": "10.0"}
    assert data["mattr"] == ["+neon"]
    assert get_target("ml_c5").default_options == (("mcpu", '"skylake-avx512"'),)
    assert get_target("rasp3b").to_dict()["default_options"] == {"mattr": ["+neon"],
                                                                 "runtime": "standalone"}


def test_with_overrides_and_host_arch():
    spec = get_target("rasp4b")
    changed = spec.with_overrides(mattr=["+neon", "+crc"])
    assert changed.mattr == ("+neon", "+crc") and changed.mcpu == "cortex-a72"
    assert spec.with_overrides() == spec
    assert isinstance(spec, TargetSpec) and spec.host_runnable_arch == "aarch64"


def test_valid_rows_round_trip():
    specs = validate_catalog(catalog_rows())
    assert specs == list_targets()


def _rows_with(change):
    rows = catalog_rows()
    change(rows)
    return rows


def _broken(rows):
    with pytest.raises(RuntimeError) as info:
        validate_catalog(rows)
    return str(info.value)


def test_duplicate_name_is_rejected():
    message = _broken(_rows_with(lambda rows: rows.append(dict(rows[0]))))
    assert "'lambda'" in message and "already used" in message


def test_alias_clashing_with_a_name_is_rejected():
    message = _broken(_rows_with(lambda rows: rows[0].update(aliases=["rasp4b"])))
    assert "already used" in message


def test_bad_status_is_rejected():
    message = _broken(_rows_with(lambda rows: rows[0].update(status="works")))
    assert "row 1" in message and "'status'" in message and "'works'" in message


def test_missing_reason_is_rejected():
    message = _broken(_rows_with(lambda rows: rows[0].pop("reason")))
    assert "'reason'" in message and "required" in message
    message = _broken(_rows_with(lambda rows: rows[0].update(reason="  ")))
    assert "'reason'" in message


def test_armv7_row_with_x86_triple_is_rejected():
    def change(rows):
        row = next(r for r in rows if r["name"] == "rasp3b")
        row["triple"] = "x86_64-linux-gnu"
    message = _broken(_rows_with(change))
    assert "rasp3b" in message and "'triple'" in message


@pytest.mark.parametrize("field, value, words", [
    ("num_cores", True, "of type int"),
    ("mattr", "+neon", "list of strings"),
    ("arch", "mips", "'arch'"),
    ("os", "freebsd", "'os'"),
    ("gpu_arch", "sm_75", "only NVIDIA"),
    ("float_abi", "hard", "float_abi"),
    ("colour", "red", "unknown field"),
    ("default_options", {"mcpus": "x"}, "default_options"),
    ("default_options", {"gpu-code": "sm_75"}, "NVIDIA"),
])
def test_other_broken_fields_are_rejected(field, value, words):
    message = _broken(_rows_with(lambda rows: rows[0].update({field: value})))
    assert words in message and "lambda" in message


def test_gnueabihf_needs_hard_float():
    def change(rows):
        next(r for r in rows if r["name"] == "rasp3b").pop("float_abi")
    assert "gnueabihf" in _broken(_rows_with(change))


def test_verified_needs_a_runnable_cpu():
    def change(rows):  # armv7 without the standalone executor: no runtime to verify with
        row = next(r for r in rows if r["name"] == "rasp3b")
        row["default_options"] = {"mattr": ["+neon"]}
    assert "'verified'" in _broken(_rows_with(change))


def test_codegen_status_is_accepted():
    specs = validate_catalog(_rows_with(lambda rows: rows[-1].update(status="codegen")))
    assert specs[-1].status == "codegen"


def test_missing_neo_device_and_wrong_neo_flag_are_rejected():
    message = _broken(_rows_with(lambda rows: rows.pop(0)))
    assert "missing" in message and "lambda" in message
    message = _broken(_rows_with(lambda rows: rows[-1].update(neo=True)))
    assert "riscv64" in message and "'neo'" in message


def test_docs_page_is_up_to_date():
    page = render()
    for spec in list_targets():
        assert f"`{spec.name}`" in page
    committed = (ROOT / "docs" / "targets.md").read_text(encoding="utf-8")
    assert committed == page, "regenerate: PYTHONPATH=src python -m kiln.targets.docs > docs/targets.md"


def test_package_imports_only_the_stdlib():
    allowed = {"__future__", "collections", "copy", "dataclasses", "difflib", "hashlib", "importlib",
               "json", "re", "tomllib", "kiln"}
    for path in (ROOT / "src" / "kiln" / "targets").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"
                if name.startswith("kiln."):
                    assert name == "kiln.errors" or name.startswith("kiln.targets"), f"{path.name}: {name}"
