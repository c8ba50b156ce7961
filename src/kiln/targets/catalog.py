"""The device catalog: ``devices.toml``, loaded and checked once, when this module is imported.

Like TVM validating its target tags at import, a broken catalog fails fast with a plain
``RuntimeError`` naming the row and the field: it is a programming error, not a user error.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import tomllib
from importlib import resources

from kiln.errors import KilnError
from kiln.targets.options import apply_compiler_options, parse_compiler_options
from kiln.targets.spec import TargetSpec, spec_problems

#: The 37 TargetDevice values of the SageMaker Neo API, in the order of its enum table.
NEO_TARGET_DEVICES = (
    "lambda", "ml_m4", "ml_m5", "ml_m6g", "ml_c4", "ml_c5", "ml_c6g", "ml_p2", "ml_p3", "ml_g4dn",
    "ml_inf1", "ml_inf2", "ml_trn1", "jetson_tx1", "jetson_tx2", "jetson_nano", "jetson_xavier",
    "rasp3b", "rasp4b", "imx8qm", "deeplens", "rk3399", "rk3288", "aisage", "sbe_c", "ml_eia2",
    "qcs605", "qcs603", "sitara_am57x", "amba_cv2", "amba_cv22", "amba_cv25", "x86_win32",
    "x86_win64", "coreml", "jacinto_tda4vm", "imx8mplus",
)
_REQUIRED = {
    "name": str, "description": str, "os": str, "arch": str, "triple": str,
    "status": str, "reason": str, "neo": bool,
}
# field -> (type, default when absent)
_OPTIONAL = {
    "mcpu": (str, None), "mattr": (list, ()), "float_abi": (str, None), "mabi": (str, None),
    "num_cores": (int, 0), "accelerator": (str, None), "gpu_arch": (str, None), "simd": (str, None),
    "default_options": (dict, {}), "aliases": (list, ()),
    "trees_status": (str, None), "trees_reason": (str, None),
    "accelerator_status": (str, None), "accelerator_reason": (str, None),
}
_LIST_FIELDS = ("mattr", "aliases")


def catalog_rows() -> list[dict]:
    """Return the raw rows of the packaged ``devices.toml`` (a fresh copy, safe to edit)."""
    text = resources.files("kiln.targets").joinpath("devices.toml").read_text(encoding="utf-8")
    return copy.deepcopy(tomllib.loads(text).get("device", []))


def validate_catalog(rows: list[dict]) -> list[TargetSpec]:
    """Check catalog rows and turn them into specs; raise ``RuntimeError`` naming the row and field.

    Checks every field's type, each spec's consistency (:func:`kiln.targets.spec.spec_problems`),
    the default options, unique names and aliases, and that exactly Neo's 37 devices have neo = true.
    """
    specs = [_row_to_spec(index, row) for index, row in enumerate(rows)]
    seen: dict[str, str] = {}
    for index, spec in enumerate(specs):
        for key in (spec.name, *spec.aliases):
            if key.lower() in seen:
                _fail(index, spec.name, "name", f"{key!r} is already used by device {seen[key.lower()]!r}")
            seen[key.lower()] = spec.name
        if spec.neo != (spec.name in NEO_TARGET_DEVICES):
            fact = "is not" if spec.neo else "is"
            _fail(index, spec.name, "neo", f"is {str(spec.neo).lower()}, but {spec.name!r} {fact} a Neo TargetDevice value")
    missing = [name for name in NEO_TARGET_DEVICES if name not in seen]
    if missing:
        raise RuntimeError(f"devices.toml: Neo TargetDevice values missing from the catalog: {', '.join(missing)}")
    return specs


def list_targets() -> list[TargetSpec]:
    """Return every catalog device, in catalog order."""
    return list(_CATALOG)


def get_target(name: str) -> TargetSpec:
    """Return the device called *name* (case-insensitive; aliases too).

    Raises ``KilnError("unknown_target")`` with the closest names in the hint.
    """
    key = str(name).strip().lower()
    if key in _BY_NAME:
        return _BY_NAME[key]
    close = difflib.get_close_matches(key, [spec.name for spec in _CATALOG], n=3, cutoff=0.5)
    hint = "`kiln targets` lists all"
    if close:
        hint = f"did you mean: {', '.join(close)}? {hint}"
    raise KilnError("unknown_target", f"unknown target {name!r}", hint=hint)


def _fail(index: int, name, field: str, problem: str):
    raise RuntimeError(f"devices.toml row {index + 1} ({name!r}): field {field!r}: {problem}")


def _row_to_spec(index: int, row: dict) -> TargetSpec:
    name = row.get("name") if isinstance(row, dict) else None
    if not isinstance(row, dict):
        _fail(index, name, "-", f"a row must be a table, got {type(row).__name__}")
    unknown = sorted(set(row) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        _fail(index, name, unknown[0], "unknown field (a typo?)")
    values = {}
    for field, kind in _REQUIRED.items():
        if field not in row:
            _fail(index, name, field, "is required")
        values[field] = _typed(index, name, field, row[field], kind)
    for field, (kind, default) in _OPTIONAL.items():
        values[field] = _typed(index, name, field, row[field], kind) if field in row else default
    for field in _LIST_FIELDS:
        values[field] = tuple(values[field])
    options = values.pop("default_options")
    spec = _with_defaults(index, TargetSpec(default_options=(), **values), options)
    for field, problem in spec_problems(spec):
        _fail(index, name, field, problem)
    return spec


def _typed(index: int, name, field: str, value, kind: type):
    # bool is an int to Python, not to the catalog
    ok = type(value) is kind if kind in (bool, int) else isinstance(value, kind)
    if ok and kind is list:
        ok = all(isinstance(item, str) for item in value)
    if not ok:
        wanted = "a list of strings" if kind is list else f"of type {kind.__name__}"
        _fail(index, name, field, f"must be {wanted}, got {value!r}")
    return value


def _with_defaults(index: int, spec: TargetSpec, options: dict) -> TargetSpec:
    try:
        opts = parse_compiler_options(options)
        apply_compiler_options(spec, opts)
    except KilnError as exc:
        _fail(index, spec.name, "default_options", f"{exc.message} ({exc.hint})")
    pairs = tuple(sorted((key, json.dumps(value)) for key, value in opts.to_dict().items()))
    return dataclasses.replace(spec, default_options=pairs)


_CATALOG: tuple[TargetSpec, ...] = tuple(validate_catalog(catalog_rows()))
_BY_NAME: dict[str, TargetSpec] = {
    key.lower(): spec for spec in _CATALOG for key in (spec.name, *spec.aliases)
}
