"""Target devices: the catalog, Neo TargetPlatforms and Neo CompilerOptions. Pure stdlib, no TVM.

>>> from kiln.targets import get_target
>>> get_target("rasp4b").tvm_target()["mcpu"]
'cortex-a72'
"""

from __future__ import annotations

from kiln.errors import KilnError
from kiln.targets.catalog import get_target, list_targets, validate_catalog
from kiln.targets.options import CompilerOptions, apply_compiler_options, parse_compiler_options
from kiln.targets.platform import parse_platform, resolve_platform
from kiln.targets.spec import TargetSpec


def resolve_target(name: str | None, platform: str | None, compiler_options=None) -> tuple[TargetSpec, CompilerOptions]:
    """Resolve ``--target`` or ``--platform`` (exactly one) plus CompilerOptions into a spec.

    The device's default options come first and the given *compiler_options* (JSON text, dict or
    None) override them key by key; the merged options are applied to the spec and returned with it.
    """
    if bool(name) == bool(platform):
        raise KilnError("unknown_target", "give exactly one of --target or --platform",
                        hint="e.g. --target rasp4b or --platform LINUX/ARM64; `kiln targets` lists all")
    spec = get_target(name) if name else parse_platform(platform)
    given = parse_compiler_options(compiler_options)
    options = parse_compiler_options({**spec.to_dict()["default_options"], **given.to_dict()})
    return apply_compiler_options(spec, options), options


__all__ = [
    "CompilerOptions", "TargetSpec", "apply_compiler_options", "get_target", "list_targets",
    "parse_compiler_options", "parse_platform", "resolve_platform", "resolve_target", "validate_catalog",
]
