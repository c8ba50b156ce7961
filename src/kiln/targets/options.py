"""Neo ``CompilerOptions``: parse the JSON, check every key and value, apply them to a target.

Keys use Neo's spelling (``gpu-code``, ``ANDROID_PLATFORM``, ...). Neo options Kiln has no use
for (``JETPACK_VERSION``, ``class_labels``, Neuron CLI strings, ...) are rejected, not ignored.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass

from kiln.errors import KilnError
from kiln.targets.spec import TargetSpec

#: Neo key -> CompilerOptions field.
FIELDS = {
    "mcpu": "mcpu", "mattr": "mattr", "gpu-code": "gpu_code", "cuda-ver": "cuda_ver",
    "trt-ver": "trt_ver", "dtype": "dtype", "ANDROID_PLATFORM": "android_platform",
    "runtime": "runtime",
}
VALID_KEYS = tuple(sorted(FIELDS))
#: Other accepted spellings -> the Neo key.
ALIASES = {"gpu_code": "gpu-code", "DTYPE": "dtype"}
#: Neo's ``dtype`` names the input dtype (float32, int64); Kiln adds the reduced compute
#: precisions (float16, bfloat16: mixed precision, the model's inputs and outputs unchanged).
DTYPES = {"float": "float32", "float32": "float32", "float16": "float16", "fp16": "float16",
          "bfloat16": "bfloat16", "bf16": "bfloat16", "int64": "int64", "long": "int64"}
#: The dtype values that select a reduced compute precision.
COMPUTE_DTYPES = ("float16", "bfloat16")
ANDROID_LEVELS = range(21, 36)
#: Kiln's ``runtime`` option: TVM's runtime (relax VM, libtvm_runtime) or Kiln's standalone
#: C executor (no TVM on the device; static shapes only). Default: the device's, else Kiln
#: picks standalone on CPU Linux targets (the TVM runtime when the model has dynamic shapes or
#: control flow, and on GPUs): see kiln.compiler_routes.runtime_route.
RUNTIMES = ("tvm", "standalone")
_NEO_ONLY = ("JETPACK_VERSION", "class_labels", "signature_def_key", "output_names", "num-neuroncores")
_EXAMPLE = 'e.g. \'{"mcpu": "cortex-a72", "mattr": ["+neon"]}\''
_NVIDIA_ONLY = ("gpu_code", "cuda_ver", "trt_ver")


@dataclass(frozen=True)
class CompilerOptions:
    """Checked Neo compiler options; ``None`` means "not given"."""

    mcpu: str | None = None
    mattr: tuple[str, ...] | None = None
    gpu_code: str | None = None
    cuda_ver: str | None = None
    trt_ver: str | None = None
    dtype: str | None = None
    android_platform: int | None = None
    runtime: str | None = None

    def to_dict(self) -> dict:
        """Return the options that are set, under their Neo key (``mattr`` as a list)."""
        out = {}
        for key, field in FIELDS.items():
            value = getattr(self, field)
            if value is not None:
                out[key] = list(value) if key == "mattr" else value
        return out


def parse_compiler_options(value: str | dict | None) -> CompilerOptions:
    """Parse Neo CompilerOptions from JSON text or a dict (never mutated); ``None`` or ``""`` is empty.

    Raises ``KilnError("invalid_compiler_options")`` for text that is not a JSON object, for unknown
    keys (all of them in one error) and for invalid values. A ``null`` value counts as not given.
    """
    data = _as_mapping(value)
    unknown = [str(key) for key in data if key not in FIELDS and key not in ALIASES]
    if unknown:
        raise _unknown_keys(unknown)
    fields: dict = {}
    for key, raw in data.items():
        neo_key = ALIASES.get(key, key)
        field = FIELDS[neo_key]
        if field in fields:
            raise KilnError("invalid_compiler_options", f"compiler option '{neo_key}' is given twice",
                            hint=f"'{key}' is another spelling of '{neo_key}'; keep one")
        fields[field] = None if raw is None else _CHECKS[neo_key](neo_key, raw)
    return CompilerOptions(**fields)


def apply_compiler_options(spec: TargetSpec, opts: CompilerOptions) -> TargetSpec:
    """Return *spec* with *opts* applied: mcpu/mattr replace the spec's, gpu-code its gpu_arch.

    NVIDIA keys (gpu-code, cuda-ver, trt-ver) need an NVIDIA target and ANDROID_PLATFORM an
    Android one; otherwise ``KilnError("invalid_compiler_options")``.
    """
    nvidia = [key for key, field in FIELDS.items() if field in _NVIDIA_ONLY and getattr(opts, field) is not None]
    if nvidia and spec.accelerator != "nvidia":
        raise KilnError(
            "invalid_compiler_options",
            f"{', '.join(repr(k) for k in nvidia)} apply only to NVIDIA targets, and {spec.name!r} is not one",
            hint="drop them, or pick an NVIDIA target (e.g. jetson_orin, or --platform LINUX/ARM64/NVIDIA)",
        )
    if opts.android_platform is not None and spec.os != "android":
        raise KilnError(
            "invalid_compiler_options",
            f"'ANDROID_PLATFORM' applies only to Android targets, and {spec.name!r} runs {spec.os}",
            hint="drop it, or pick an Android target (e.g. qcs605, or --platform ANDROID/ARM64)",
        )
    return spec.with_overrides(mcpu=opts.mcpu, mattr=opts.mattr, gpu_arch=opts.gpu_code)


def _as_mapping(value) -> dict:
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            quotes = "; JSON needs double quotes" if "'" in exc.doc else ""
            raise KilnError("invalid_compiler_options", f"compiler options are not valid JSON: {exc}",
                            hint=f"give a JSON object{quotes}, {_EXAMPLE}") from None
    if not isinstance(value, dict):
        raise KilnError("invalid_compiler_options",
                        f"compiler options must be a JSON object, got {type(value).__name__} {value!r}",
                        hint=f"give a JSON object, {_EXAMPLE}")
    return dict(value)


def _unknown_keys(unknown: list[str]) -> KilnError:
    noun = "option" if len(unknown) == 1 else "options"
    message = f"unknown compiler {noun} {', '.join(repr(k) for k in unknown)}"
    neo_only = [k for k in unknown if k in _NEO_ONLY]
    if neo_only:
        message += f" ({', '.join(neo_only)}: Neo options Kiln does not support)"
    hint = f"valid keys: {', '.join(VALID_KEYS)}"
    guesses = [(key, difflib.get_close_matches(key, list(FIELDS) + list(ALIASES), n=1, cutoff=0.6)) for key in unknown]
    guesses = [(key, ALIASES.get(close[0], close[0])) for key, close in guesses if close]
    if len(unknown) == 1 and guesses:
        hint += f"; did you mean '{guesses[0][1]}'?"
    elif guesses:
        hint += "; did you mean " + ", ".join(f"'{close}' for '{key}'" for key, close in guesses) + "?"
    return KilnError("invalid_compiler_options", message, hint=hint)


def _bad(key: str, value, expected: str) -> KilnError:
    return KilnError("invalid_compiler_options", f"compiler option '{key}' has an invalid value {value!r}",
                     hint=f"'{key}' must be {expected}")


def _pattern(regex: str, expected: str):
    compiled = re.compile(regex)

    def check(key: str, value) -> str:
        if not isinstance(value, str) or not compiled.fullmatch(value):
            raise _bad(key, value, expected)
        return value

    return check


def _mattr(key: str, value) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    expected = 'a list of LLVM features, each starting with + or -, e.g. ["+neon", "+vfp4"] or "+neon,+vfp4"'
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise _bad(key, value, expected)
    features = tuple(item.strip() for item in items if item.strip())
    if not all(re.fullmatch(r"[+-][A-Za-z0-9_.-]+", feature) for feature in features):
        raise _bad(key, value, expected)
    return features


def _dtype(key: str, value) -> str:
    if not isinstance(value, str) or value.lower() not in DTYPES:
        raise _bad(key, value, f"one of {', '.join(DTYPES)}")
    return DTYPES[value.lower()]


def _android_platform(key: str, value) -> int:
    number = value if type(value) is int else int(value) if isinstance(value, str) and value.isdigit() else None
    if number not in ANDROID_LEVELS:
        raise _bad(key, value, f"an Android API level from {ANDROID_LEVELS.start} to {ANDROID_LEVELS.stop - 1}")
    return number


def _runtime(key: str, value) -> str:
    if not isinstance(value, str) or value.lower() not in RUNTIMES:
        raise _bad(key, value, f"one of {', '.join(RUNTIMES)}")
    return value.lower()


_CHECKS = {
    "mcpu": _pattern(r"[a-z0-9_.-]+", "an LLVM CPU name of [a-z0-9_.-], e.g. cortex-a72 or skylake-avx512"),
    "mattr": _mattr,
    "gpu-code": _pattern(r"sm_\d+", "a CUDA arch like sm_75 or sm_87"),
    "cuda-ver": _pattern(r"\d+\.\d+", "a CUDA version x.y, e.g. 12.2"),
    "trt-ver": _pattern(r"\d+(\.\d+){1,2}", "a TensorRT version x.y.z, e.g. 8.6.2"),
    "dtype": _dtype,
    "ANDROID_PLATFORM": _android_platform,
    "runtime": _runtime,
}
