"""A target device as data: :class:`TargetSpec`, its consistency checks and its TVM target dict.

Nothing here imports TVM. :meth:`TargetSpec.tvm_target` returns the JSON dict that the codegen
layer hands to ``tvm.target.Target`` (TVM 0.27 accepts a dict as well as a tag name).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass

STATUSES = ("verified", "codegen", "unsupported")
#: "none": bare metal (a Cortex-M without an OS beside an Ethos-U55): a host-less NPU target,
#: for which Kiln builds no CPU library, only the NPU hand-off (kiln.compiler_npu)
OSES = ("linux", "android", "windows", "darwin", "none")
ARCHES = ("x86_64", "x86", "aarch64", "armv7", "riscv64", "armv8.1m")
ACCELERATORS = (
    "nvidia", "mali", "intel_graphics", "neuron", "dpu", "tidl", "npu", "cvflow", "hexagon",
    "elastic_inference", "coreml", "ethos_u",
)
SIMDS = ("avx512", "avx2", "avx", "sse4.2", "neon", "sve", "rvv")
FLOAT_ABIS = ("hard", "soft")
#: (os, arch) pairs whose CPU code Kiln runs today: x86_64 natively, aarch64 under qemu-aarch64.
RUNNABLE = (("linux", "x86_64"), ("linux", "aarch64"))
#: (os, arch) pairs whose tree-ensemble code Kiln builds and runs today (no TVM runtime needed):
#: x86_64 natively, the others under qemu-user.
TREE_RUNNABLE = (("linux", "x86_64"), ("linux", "aarch64"), ("linux", "armv7"), ("linux", "riscv64"))
#: (os, arch) pairs Kiln's standalone executor (no TVM runtime) builds and runs today.
STANDALONE_RUNNABLE = TREE_RUNNABLE
#: The fields that change the generated code; :meth:`TargetSpec.fingerprint` hashes exactly these.
CODEGEN_FIELDS = ("os", "arch", "triple", "mcpu", "mattr", "float_abi", "mabi", "accelerator", "gpu_arch")

# arch -> what the LLVM triple must look like
_TRIPLE_ARCH = {
    "x86_64": re.compile(r"x86_64-"),
    "x86": re.compile(r"i[3-6]86-"),
    "aarch64": re.compile(r"aarch64-"),
    "armv7": re.compile(r"armv[78][a-z]*-.*(gnueabihf|gnueabi|androideabi)$"),
    "riscv64": re.compile(r"riscv64-"),
    "armv8.1m": re.compile(r"thumbv8\.1m\.main-"),
}
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_ALIAS = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_MCPU = re.compile(r"[a-z0-9_.-]+")
_MATTR = re.compile(r"[+-][A-Za-z0-9_.-]+")
_GPU_ARCH = re.compile(r"sm_\d+")


@dataclass(frozen=True)
class TargetSpec:
    """One device (or one Neo TargetPlatform) Kiln can be asked to compile for."""

    name: str
    description: str
    os: str
    arch: str
    triple: str
    mcpu: str | None
    mattr: tuple[str, ...]
    float_abi: str | None
    mabi: str | None
    num_cores: int
    accelerator: str | None
    gpu_arch: str | None
    simd: str | None
    default_options: tuple[tuple[str, str], ...]
    status: str
    reason: str
    neo: bool
    aliases: tuple[str, ...] = ()
    #: status and reason for tree ensembles (C code, no TVM runtime) where they differ from
    #: the neural-network ones; None = same as ``status`` / ``reason``
    trees_status: str | None = None
    trees_reason: str | None = None
    #: status and reason of the accelerator part (DPU, TIDL): "codegen" = Kiln partitions,
    #: quantizes and hands it off to the vendor SDK without running it; None = no such part
    accelerator_status: str | None = None
    accelerator_reason: str | None = None

    @property
    def tree_status(self) -> str:
        return self.trees_status or self.status

    @property
    def tree_reason(self) -> str:
        return self.trees_reason or self.reason

    def to_dict(self) -> dict:
        """Return a JSON-able dict: lists for tuples, ``default_options`` as a dict of decoded values."""
        out = dataclasses.asdict(self)
        out["mattr"] = list(self.mattr)
        out["aliases"] = list(self.aliases)
        out["default_options"] = {key: json.loads(value) for key, value in self.default_options}
        return out

    def fingerprint(self) -> str:
        """Return ``"sha256:<hex>"`` of the canonical JSON of the fields that affect generated code."""
        fields = {name: getattr(self, name) for name in CODEGEN_FIELDS}
        fields["mattr"] = list(self.mattr)
        text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()

    def tvm_target(self) -> dict:
        """Return the TVM 0.27 JSON-dict target for the device's CPU (``kind`` ``llvm``)."""
        target: dict = {"kind": "llvm", "mtriple": self.triple}
        optional = {
            "mcpu": self.mcpu,
            "mattr": list(self.mattr) or None,
            "mfloat-abi": self.float_abi,
            "mabi": self.mabi,
            "num-cores": self.num_cores or None,
        }
        target.update({key: value for key, value in optional.items() if value is not None})
        return target

    @property
    def npu_only(self) -> bool:
        """A host-less NPU target (os "none"): Vela's model and estimate, no CPU library."""
        return self.os == "none"

    @property
    def host_runnable_arch(self) -> str:
        """The arch to compare with ``platform.machine()`` when deciding whether code runs natively."""
        return self.arch

    def with_overrides(self, *, mcpu: str | None = None, mattr=None, gpu_arch: str | None = None) -> TargetSpec:
        """Return a copy with the given (non-None) mcpu, mattr and gpu_arch replaced."""
        changes = {"mcpu": mcpu, "mattr": None if mattr is None else tuple(mattr), "gpu_arch": gpu_arch}
        return dataclasses.replace(self, **{key: value for key, value in changes.items() if value is not None})


def spec_problems(spec: TargetSpec) -> list[tuple[str, str]]:
    """Return ``(field, problem)`` pairs for every inconsistency in *spec*; empty when it is sound."""
    problems: list[tuple[str, str]] = []

    def check(ok: bool, field: str, problem: str) -> None:
        if not ok:
            problems.append((field, problem))

    check(bool(_NAME.fullmatch(spec.name)), "name", f"must match [a-z][a-z0-9_]*, got {spec.name!r}")
    for alias in spec.aliases:
        check(bool(_ALIAS.fullmatch(alias)), "aliases", f"alias {alias!r} must match [a-z0-9][a-z0-9_.-]*")
    check(bool(spec.description.strip()), "description", "must not be empty")
    check(bool(spec.reason.strip()), "reason", "must say why the target has its status")
    check(spec.status in STATUSES, "status", _one_of(STATUSES, spec.status))
    check(spec.os in OSES, "os", _one_of(OSES, spec.os))
    check(spec.arch in ARCHES, "arch", _one_of(ARCHES, spec.arch))
    problems.extend(_triple_problems(spec))
    problems.extend(_cpu_problems(spec))
    problems.extend(_accelerator_problems(spec))
    check(
        spec.status != "verified" or (spec.os, spec.arch) in RUNNABLE or (
            (spec.os, spec.arch) in STANDALONE_RUNNABLE and spec.float_abi != "soft"
            and ("runtime", '"standalone"') in spec.default_options), "status",
        f"'verified' needs a CPU Kiln runs today (linux x86_64 or aarch64; armv7 hard-float or "
        f"riscv64 with default_options runtime = 'standalone'), not {spec.os} {spec.arch}",
    )
    problems.extend(_tree_problems(spec))
    problems.extend(_accelerator_status_problems(spec))
    check(spec.os != "none" or (spec.accelerator == "ethos_u" and spec.accelerator_status ==
                                "codegen" and spec.status == "codegen"
                                and spec.tree_status == "unsupported"), "os",
          "'none' (no OS: a host-less NPU target) needs accelerator 'ethos_u', status and "
          "accelerator_status 'codegen' and trees_status 'unsupported'")
    return problems


def _accelerator_status_problems(spec: TargetSpec) -> list[tuple[str, str]]:
    if spec.accelerator_status is None:
        return [("accelerator_reason", "needs an accelerator_status")] \
            if spec.accelerator_reason is not None else []
    problems = []
    if spec.accelerator_status not in STATUSES:
        problems.append(("accelerator_status", _one_of(STATUSES, spec.accelerator_status)))
    if spec.accelerator is None:
        problems.append(("accelerator_status", "needs an accelerator"))
    if not (spec.accelerator_reason or "").strip():
        problems.append(("accelerator_reason", "must say why the accelerator has its status"))
    return problems


def _tree_problems(spec: TargetSpec) -> list[tuple[str, str]]:
    problems = []
    if spec.trees_status is not None:
        if spec.trees_status not in STATUSES:
            problems.append(("trees_status", _one_of(STATUSES, spec.trees_status)))
        if not (spec.trees_reason or "").strip():
            problems.append(("trees_reason", "must say why tree ensembles have their status"))
    elif spec.trees_reason is not None:
        problems.append(("trees_reason", "needs a trees_status"))
    if spec.tree_status == "verified" and (spec.os, spec.arch) not in TREE_RUNNABLE:
        problems.append(("trees_status", f"'verified' for tree ensembles needs linux x86_64, "
                         f"aarch64, armv7 or riscv64, not {spec.os} {spec.arch}"))
    return problems


def _one_of(allowed: tuple[str, ...], got) -> str:
    return f"must be one of {', '.join(repr(a) for a in allowed)}, got {got!r}"


def _triple_problems(spec: TargetSpec) -> list[tuple[str, str]]:
    triple = spec.triple
    pattern = _TRIPLE_ARCH.get(spec.arch)
    problems = []
    if pattern is not None and not pattern.match(triple):
        problems.append(("triple", f"{triple!r} does not fit arch {spec.arch!r} (expected /{pattern.pattern}/)"))
    os_ok = {
        "linux": "linux" in triple and "android" not in triple,
        "android": "android" in triple,
        "windows": "windows" in triple,
        "darwin": "darwin" in triple or "apple" in triple,
        "none": "-none-" in triple,
    }.get(spec.os, True)
    if not os_ok:
        problems.append(("triple", f"{triple!r} does not fit os {spec.os!r}"))
    return problems


def _cpu_problems(spec: TargetSpec) -> list[tuple[str, str]]:
    problems = []
    if spec.mcpu is not None and not _MCPU.fullmatch(spec.mcpu):
        problems.append(("mcpu", f"must match [a-z0-9_.-]+, got {spec.mcpu!r}"))
    problems += [("mattr", f"feature {f!r} must look like +neon or -sve") for f in spec.mattr if not _MATTR.fullmatch(f)]
    if spec.float_abi is not None and (spec.float_abi not in FLOAT_ABIS or spec.arch != "armv7"):
        problems.append(("float_abi", f"only 'hard' or 'soft' on armv7, got {spec.float_abi!r} on {spec.arch}"))
    if spec.triple.endswith("gnueabihf") and spec.float_abi != "hard":
        problems.append(("float_abi", "a *-gnueabihf triple needs float_abi = 'hard' (else linking fails)"))
    if spec.mabi is not None and spec.arch != "riscv64":
        problems.append(("mabi", f"only riscv64 targets take an mabi, not {spec.arch}"))
    if spec.simd is not None and spec.simd not in SIMDS:
        problems.append(("simd", _one_of(SIMDS, spec.simd)))
    if spec.num_cores < 0:
        problems.append(("num_cores", f"must be >= 0 (0 = unknown), got {spec.num_cores}"))
    return problems


def _accelerator_problems(spec: TargetSpec) -> list[tuple[str, str]]:
    problems = []
    if spec.accelerator is not None and spec.accelerator not in ACCELERATORS:
        problems.append(("accelerator", _one_of(ACCELERATORS, spec.accelerator)))
    if spec.gpu_arch is not None and spec.accelerator != "nvidia":
        problems.append(("gpu_arch", f"only NVIDIA targets have a gpu_arch, this one has accelerator {spec.accelerator!r}"))
    if spec.gpu_arch is not None and not _GPU_ARCH.fullmatch(spec.gpu_arch):
        problems.append(("gpu_arch", f"must look like sm_75, got {spec.gpu_arch!r}"))
    return problems
