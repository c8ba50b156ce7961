"""``manifest.json``: what an artifact is, for whom it was built, and how it was checked."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kiln.errors import KilnError
from kiln.signature import ModelSignature

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Manifest:
    """The versioned description stored in every artifact (see docs/artifact.md)."""

    kiln_version: str
    tvm_version: str
    tvm_ffi_version: str
    created_at: str
    target: dict            # {"name", "fingerprint", "spec": TargetSpec.to_dict()}
    framework: str
    source: dict            # {"file", "sha256"}
    signature: ModelSignature
    compile_options: dict
    compiler_options: dict  # Neo's CompilerOptions as given, normalized
    runtime: dict           # {"kind", "abi_version", "library", "runner", "header", "min_glibc"}
    files: dict = field(default_factory=dict)         # {relpath: {"sha256", "size"}}
    verification: dict = field(default_factory=dict)  # the accuracy report
    quantization: dict = field(default_factory=dict)  # int8: quantizer, calibration, accuracy
    partition: dict = field(default_factory=dict)     # accelerator segments and hand-off
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        out = asdict(self)
        sig = self.signature.to_dict()
        out.pop("signature")
        out["inputs"], out["outputs"] = sig["inputs"], sig["outputs"]
        return dict(sorted(out.items()))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @property
    def arch(self) -> str:
        return self.target["spec"]["arch"]

    @property
    def accelerator(self) -> str | None:
        return self.target["spec"].get("accelerator")

    @classmethod
    def from_dict(cls, d: dict) -> "Manifest":
        if not isinstance(d, dict) or "schema_version" not in d:
            raise KilnError("invalid_artifact", "manifest.json has no schema_version",
                            hint="this is not a Kiln artifact")
        if d["schema_version"] != SCHEMA_VERSION:
            raise KilnError("invalid_artifact", f"manifest schema {d['schema_version']} is not "
                            f"supported (this Kiln reads schema {SCHEMA_VERSION})",
                            hint="use the Kiln version that built the artifact, or recompile")
        try:
            _require(d, "target", dict, ("name", "fingerprint", "spec"))
            _require(d["target"], "spec", dict, ("os", "arch"))
            _require(d, "runtime", dict, ("library", "runner"))
            _require(d, "files", dict, ())
            sig = ModelSignature.from_dict({"inputs": d["inputs"], "outputs": d["outputs"]})
            keys = [k for k in cls.__dataclass_fields__ if k != "signature"]
            return cls(signature=sig, **{k: d[k] for k in keys if k in d})
        except (KeyError, TypeError, ValueError) as exc:
            raise KilnError("invalid_artifact", f"manifest.json is malformed: {exc!r}",
                            hint="the artifact is damaged; compile it again") from None


def _require(d: dict, key: str, kind: type, fields: tuple[str, ...]) -> None:
    value = d.get(key)
    if not isinstance(value, kind):
        raise KeyError(f"{key} must be a {kind.__name__}")
    missing = [f for f in fields if f not in value]
    if missing:
        raise KeyError(f"{key} lacks {', '.join(missing)}")


def read_manifest(folder: Path) -> Manifest:
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise KilnError("invalid_artifact", f"{folder} has no {MANIFEST_NAME}",
                        hint="give an artifact written by `kiln compile`")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise KilnError("invalid_artifact", f"{MANIFEST_NAME} is not valid JSON: {exc}",
                        hint="the artifact is damaged; compile it again") from None
    return Manifest.from_dict(data)
