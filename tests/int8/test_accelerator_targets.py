"""``accelerator_status`` / ``accelerator_reason`` in devices.toml: the DPU and TIDL boards hand
their accelerator part off (codegen) while their CPU stays verified."""

from __future__ import annotations

import pytest

from kiln.partition import ACCELERATORS
from kiln.targets import get_target, list_targets
from kiln.targets.catalog import catalog_rows, validate_catalog

HANDED_OFF = {"kv260": "dpu", "zcu102": "dpu", "zcu104": "dpu", "jacinto_tda4vm": "tidl",
              "am62a": "tidl", "imx93": "ethos_u", "corstone300": "ethos_u"}
#: host-less NPU targets (os "none"): no CPU Kiln builds for, so status codegen too
HOSTLESS = {"corstone300"}


def test_dpu_and_tidl_boards_are_codegen_for_the_accelerator():
    for name, accel in HANDED_OFF.items():
        spec = get_target(name)
        assert (spec.accelerator, spec.accelerator_status) == (accel, "codegen")
        assert spec.status == ("codegen" if name in HOSTLESS else "verified")
        assert accel in ACCELERATORS or accel == "ethos_u"
        assert spec.npu_only == (name in HOSTLESS)
        assert "not run" in spec.accelerator_reason
    others = {t.name for t in list_targets() if t.accelerator_status is not None}
    assert others == set(HANDED_OFF)


def _broken(change) -> str:
    rows = catalog_rows()
    change(rows)
    with pytest.raises(RuntimeError) as info:
        validate_catalog(rows)
    return str(info.value)


def test_accelerator_status_needs_an_accelerator_and_a_reason():
    def no_accel(rows):
        next(r for r in rows if r["name"] == "rasp4b").update(
            accelerator_status="codegen", accelerator_reason="x")
    assert "'accelerator_status'" in _broken(no_accel)

    def no_reason(rows):
        next(r for r in rows if r["name"] == "kv260").pop("accelerator_reason")
    assert "'accelerator_reason'" in _broken(no_reason)

    def bad(rows):
        next(r for r in rows if r["name"] == "kv260").update(accelerator_status="works")
    assert "'works'" in _broken(bad)


def test_a_hostless_target_is_an_ethos_u_handed_off():
    spec = get_target("ethos-u55")
    assert (spec.name, spec.os, spec.arch, spec.mcpu) == ("corstone300", "none", "armv8.1m",
                                                          "cortex-m55")
    assert spec.tree_status == "unsupported"

    def verified(rows):
        next(r for r in rows if r["name"] == "corstone300").update(status="verified")
    assert "'status'" in _broken(verified)

    def no_npu(rows):
        row = next(r for r in rows if r["name"] == "corstone300")
        for k in ("accelerator", "accelerator_status", "accelerator_reason"):
            row.pop(k)
    assert "'os'" in _broken(no_npu)
