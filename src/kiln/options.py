"""Typed, frozen options. Built once at the edge (CLI, Python API, service) and recorded."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from kiln.errors import KilnError

#: Default accuracy tolerances per output dtype: (max abs error, max rel error, min cosine).
DEFAULT_TOLERANCES: dict[str, tuple[float, float, float]] = {
    "float32": (1e-4, 1e-3, 0.9999),
    "float64": (1e-8, 1e-6, 0.999999),
    "float16": (1e-2, 5e-2, 0.999),
    # int8 against the fp32 model: cosine, and every element within 10% of the output's range
    # (atol is that fraction; kiln.quantize.accuracy turns it into an absolute bound per output)
    "int8": (0.1, 0.0, 0.99),
}

QUANTIZE_MODES = ("int8",)
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class Tolerance:
    """Accuracy gate thresholds; ``None`` fields take :data:`DEFAULT_TOLERANCES` for the dtype."""

    atol: float | None = None
    rtol: float | None = None
    min_cosine: float | None = None

    def filled_from(self, dtype: str) -> Tolerance:
        """This tolerance with the fields left unset taken from ``dtype``'s defaults (the
        thresholds for a model computed in reduced precision)."""
        atol, rtol, cos = DEFAULT_TOLERANCES[dtype]
        return Tolerance(atol=atol if self.atol is None else self.atol,
                         rtol=rtol if self.rtol is None else self.rtol,
                         min_cosine=cos if self.min_cosine is None else self.min_cosine)

    def resolve(self, dtype: str) -> tuple[float, float, float]:
        atol, rtol, cos = DEFAULT_TOLERANCES.get(dtype, (0.0, 0.0, 1.0))
        return (
            atol if self.atol is None else self.atol,
            rtol if self.rtol is None else self.rtol,
            cos if self.min_cosine is None else self.min_cosine,
        )


@dataclass(frozen=True)
class QuantizeOptions:
    """Post-training quantization (``--quantize int8 --calibration FILE.npz``).

    ``per_channel`` weights (default on); ``symmetric`` activations (int8, zero point 0) or
    asymmetric (uint8 with a zero point, the default: more accurate after ReLU); ``method`` of calibration: minmax, entropy or
    percentile (``percentile`` keeps that share of the values, e.g. 99.999).
    """

    mode: str = "int8"
    calibration: str = ""
    per_channel: bool = True
    symmetric: bool = False
    method: str = "minmax"
    percentile: float = 99.999

    def __post_init__(self) -> None:
        if self.mode not in QUANTIZE_MODES:
            raise KilnError("invalid_quantize_options", f"--quantize must be one of "
                            f"{list(QUANTIZE_MODES)}, got {self.mode!r}", hint="--quantize int8")
        if not self.calibration:
            raise KilnError("invalid_quantize_options", "--quantize int8 needs --calibration "
                            "FILE.npz (representative inputs, one array per model input)",
                            hint="numpy.savez('calib.npz', x=batch) with a leading sample axis")
        if self.method not in CALIBRATION_METHODS:
            raise KilnError("invalid_quantize_options", f"calibration method must be one of "
                            f"{list(CALIBRATION_METHODS)}, got {self.method!r}",
                            hint="--calibration-method minmax")
        if not 50.0 < self.percentile <= 100.0:
            raise KilnError("invalid_quantize_options", f"percentile must be in (50, 100], got "
                            f"{self.percentile!r}", hint="e.g. 99.999")


@dataclass(frozen=True)
class CompileOptions:
    """Everything that decides how a model is compiled, apart from the target.

    Parameters
    ----------
    input_shapes : tuple of (name, shape) pairs, optional
        Neo's DataInputConfig; overrides the shapes stored in the model.
    opt_level : int
        0: TVM's plain pipeline; 1: operator fusion; 2 (default): fusion and Kiln's
        default CPU schedules (parallel, vectorized, register-tiled).
    verify : bool
        Run the artifact and compare it with the reference (the accuracy gate).
    tolerance : Tolerance
        Thresholds of the accuracy gate.
    seed : int
        Seed of the generated verification inputs.
    tune_trials, tune_time_budget : int, float, optional
        Tune the model's kernels on the device before compiling (MetaSchedule, into the
        target's tuning database), for this many trials or seconds.
    use_tuning_db : bool
        Apply the target's tuning database when it exists (the default).
    quantize : QuantizeOptions, optional
        Quantize to int8 with a calibration set before compiling.
    winograd : bool
        At opt level 2, compute float32 stride-1 3x3 convolutions as Winograd transforms around
        a matmul (the default; a third to a half of the multiplies, errors within a few 1e-6 of
        the output's scale). ``False`` keeps every convolution direct.
    """

    input_shapes: tuple[tuple[str, tuple[int, ...]], ...] | None = None
    opt_level: int = 2
    verify: bool = True
    tolerance: Tolerance = field(default_factory=Tolerance)
    seed: int = 0
    tune_trials: int | None = None
    tune_time_budget: float | None = None
    use_tuning_db: bool = True
    quantize: QuantizeOptions | None = None
    winograd: bool = True

    def __post_init__(self) -> None:
        if self.opt_level not in (0, 1, 2, 3):
            raise KilnError("invalid_options", f"opt_level must be 0..3, got {self.opt_level!r}")
        _check_budget(self.tune_trials, self.tune_time_budget)
        _check_flag("winograd", self.winograd)

    @property
    def tuning(self) -> TuneOptions | None:
        """The tuning to run before compiling, if any."""
        if self.tune_trials is None and self.tune_time_budget is None:
            return None
        return TuneOptions(trials=self.tune_trials, time_budget_s=self.tune_time_budget,
                           winograd=self.winograd,
                           seed=self.seed)

    def shape_dict(self) -> dict[str, list[int]] | None:
        return None if self.input_shapes is None else {k: list(v) for k, v in self.input_shapes}

    def to_dict(self) -> dict:
        out = asdict(self)
        out["input_shapes"] = self.shape_dict()
        return out


def _check_flag(name: str, value) -> None:
    if not isinstance(value, bool):
        raise KilnError("invalid_options", f"{name} must be true or false, got {value!r}",
                        hint=f"e.g. --no-{name}")


def _check_budget(trials, seconds) -> None:
    if trials is not None and (isinstance(trials, bool) or not isinstance(trials, int) or trials < 1):
        raise KilnError("invalid_options", f"tune trials must be a positive integer, got {trials!r}",
                        hint="e.g. --trials 200")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                or seconds <= 0):
        raise KilnError("invalid_options", f"tune time budget must be a positive number of "
                        f"seconds, got {seconds!r}", hint="e.g. --time-budget 900")


@dataclass(frozen=True)
class TuneOptions:
    """How to tune (``kiln tune``): a trial count and/or a time budget, and where to measure.

    ``rpc`` is ``HOST:PORT`` of a TVM RPC tracker with the device registered under ``rpc_key``;
    without it candidates run on this machine.
    """

    trials: int | None = None
    time_budget_s: float | None = None
    rpc: str | None = None
    rpc_key: str | None = None
    seed: int = 0
    build_workers: int = 2
    #: tune the kernels of the build with (True) or without Winograd convolutions: the one
    #: the later compiles make (CompileOptions.winograd)
    winograd: bool = True

    def __post_init__(self) -> None:
        _check_flag("winograd", self.winograd)
        if self.trials is None and self.time_budget_s is None:
            raise KilnError("invalid_options", "give a number of trials or a time budget",
                            hint="e.g. --trials 200 or --time-budget 900")
        _check_budget(self.trials, self.time_budget_s)
        if self.rpc is not None:
            self.rpc_address()
            if not self.rpc_key:
                raise KilnError("invalid_options", "--rpc needs --rpc-key (the device's key on "
                                "the tracker)", hint="e.g. --rpc 127.0.0.1:9190 --rpc-key rasp4b")

    def rpc_address(self) -> tuple[str, int]:
        host, _, port = (self.rpc or "").rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise KilnError("invalid_options", f"--rpc must be HOST:PORT of a TVM RPC tracker, "
                            f"got {self.rpc!r}", hint="e.g. --rpc 127.0.0.1:9190")
        return host, int(port)


_SHAPE_HINT = 'give a JSON object of input name to shape, e.g. \'{"x": [1, 3, 224, 224]}\''


def parse_input_shapes(text: str | dict | list | None) -> tuple[tuple[str, tuple[int, ...]], ...] | None:
    """Parse Neo's DataInputConfig: a JSON object ``{name: shape}`` (or a dict already).

    A JSON list of shapes (PyTorch style in Neo) is accepted and named ``input0``, ``input1`` ...
    """
    if text is None:
        return None
    value = text
    if isinstance(text, str):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KilnError("invalid_input_shape", f"input shape is not valid JSON: {exc.msg} "
                            f"at character {exc.pos}", hint=_SHAPE_HINT) from None
    if isinstance(value, list):
        value = {f"input{i}": s for i, s in enumerate(value)}
    if not isinstance(value, dict) or not value:
        raise KilnError("invalid_input_shape", "input shape must be a non-empty JSON object",
                        hint=_SHAPE_HINT)
    pairs = []
    for name, shape in value.items():
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                                  and d > 0 for d in shape):
            raise KilnError("invalid_input_shape", f"shape of input {name!r} must be a list of "
                            f"positive integers, got {json.dumps(shape)}", hint=_SHAPE_HINT)
        pairs.append((str(name), tuple(shape)))
    return tuple(pairs)
