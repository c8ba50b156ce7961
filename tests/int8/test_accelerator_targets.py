"""``accelerator_status`` / ``accelerator_reason`` in devices.toml: the DPU and TIDL boards hand
their accelerator part off (codegen) while their CPU stays verified."""

from __future__ import annotations

import pytest

from kiln.partition import ACCELERATORS
from kiln.targets import get_target, list_targets
from kiln.targets.catalog import catalog_rows, validate_catalog

HANDED_OFF = {"kv260": "dpu", "zcu102": "dpu", "zcu104": "dpu", "jacinto_tda4vm": "tidl",
              "am62a": "tidl", "imx93": "ethos_u"}


def test_dpu_and_tidl_boards_are_codegen_for_the_accelerator():
    for name, accel in HANDED_OFF.items():
        spec = get_target(name)
        assert (spec.accelerator, spec.accelerator_status) == (accel, "codegen")
        assert spec.status == "verified" and (accel in ACCELERATORS or accel == "ethos_u")
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
