"""Targets for tree ensembles: ``trees_status`` / ``trees_reason`` in devices.toml."""

from __future__ import annotations

import pytest

from kiln.codegen.tree_build import built_spec, check_tree_buildable, cpu_flags
from kiln.errors import KilnError
from kiln.targets import get_target, list_targets
from kiln.targets.catalog import catalog_rows, validate_catalog
from kiln.targets.spec import TREE_RUNNABLE


def test_armv7_and_riscv64_take_trees_and_standalone_neural_nets():
    for name in ("rasp3b", "rk3288", "sitara_am57x", "riscv64"):
        spec = get_target(name)
        assert spec.status == "verified" and spec.tree_status == "verified"
        assert "qemu" in spec.tree_reason and "standalone" in spec.reason
        check_tree_buildable(spec)  # does not raise


def test_tree_status_defaults_to_status():
    for spec in list_targets():
        if spec.trees_status is None:
            assert spec.tree_status == spec.status and spec.tree_reason == spec.reason
        if spec.tree_status == "verified":
            assert (spec.os, spec.arch) in TREE_RUNNABLE


@pytest.mark.parametrize("name", ["x86_win64", "coreml", "ml_g4dn"])
def test_targets_without_tree_support_are_refused(name):
    with pytest.raises(KilnError) as info:
        check_tree_buildable(get_target(name))
    assert info.value.code == "target_not_yet_supported" and name in info.value.message


def test_tree_code_is_built_for_the_baseline_except_on_32bit_arm():
    assert cpu_flags(get_target("ml_c5")) == [] and built_spec(get_target("ml_c5")).mcpu is None
    assert cpu_flags(get_target("rasp3b")) == ["-mcpu=cortex_a53"]
    assert cpu_flags(get_target("sitara_am57x")) == ["-mcpu=cortex_a15"]
    assert cpu_flags(get_target("riscv64")) == []


def test_neo_platform_linux_arm_eabihf_takes_trees():
    from kiln.targets import resolve_target

    spec, _ = resolve_target(None, "LINUX/ARM_EABIHF", None)
    assert spec.status == "verified" and spec.tree_status == "verified"
    assert cpu_flags(spec) == ["-mcpu=cortex_a7"]
    for platform in ("LINUX/ARM_EABI", "ANDROID/ARM64"):
        spec, _ = resolve_target(None, platform, None)
        assert spec.tree_status == "unsupported"


def _broken(change) -> str:
    rows = catalog_rows()
    change(rows)
    with pytest.raises(RuntimeError) as info:
        validate_catalog(rows)
    return str(info.value)


def test_bad_trees_status_is_rejected():
    msg = _broken(lambda rows: rows[0].update(trees_status="works", trees_reason="x"))
    assert "'trees_status'" in msg and "'works'" in msg


def test_trees_status_needs_a_reason():
    msg = _broken(lambda rows: rows[0].update(trees_status="verified"))
    assert "'trees_reason'" in msg


def test_trees_verified_needs_a_runnable_arch():
    def change(rows):
        row = next(r for r in rows if r["name"] == "x86_win64")
        row.update(trees_status="verified", trees_reason="no")
    assert "'trees_status'" in _broken(change)
