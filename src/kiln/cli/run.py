"""``kiln run``: feed .npy files to an artifact (natively or under qemu) and write an .npz."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from kiln.artifact import read_manifest, unpack
from kiln.artifact.compat import check_has_cpu_code
from kiln.artifact.digests import check_digests
from kiln.artifact.manifest import MANIFEST_NAME
from kiln.errors import KilnError
from kiln.signature import conform_inputs
from kiln.verify.emulate import run_folder


def _read_inputs(specs: list[str], names: list[str]) -> dict[str, np.ndarray]:
    data = {}
    for spec in specs:
        name, sep, file = spec.rpartition("=")
        if not sep:
            if len(names) != 1:
                raise KilnError("invalid_input", f"--input {spec!r} needs the form NAME=FILE.npy",
                                hint=f"the model's inputs are {names}")
            name, file = names[0], spec
        path = Path(file)
        if not path.is_file():
            raise KilnError("file_not_found", f"input file {file!r} does not exist",
                            hint="give --input NAME=FILE.npy")
        try:
            data[name] = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise KilnError("invalid_input", f"{file} is not a .npy array: {exc}",
                            hint="write it with numpy.save") from None
    return data


def open_artifact(artifact: Path, tmp: str) -> Path:
    if not artifact.exists():
        raise KilnError("file_not_found", f"artifact {str(artifact)!r} does not exist",
                        hint="give the .tar.gz written by `kiln compile`")
    return artifact if artifact.is_dir() else unpack(artifact, Path(tmp))


def run_artifact(artifact: Path, input_specs: list[str], output: Path, *, repeat: int = 1):
    """Returns (mode, median run ms, output names)."""
    tmp = tempfile.mkdtemp(prefix="kiln-run-")
    try:
        folder = open_artifact(artifact, tmp)
        manifest = read_manifest(folder)
        check_has_cpu_code(manifest)
        check_digests(folder, manifest.files, exclude=(MANIFEST_NAME,))
        sig = manifest.signature
        inputs = conform_inputs(_read_inputs(input_specs, [t.name for t in sig.inputs]), sig)
        result = run_folder(folder, manifest.target["spec"], sig, inputs, repeat=repeat)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    names = [t.name for t in sig.outputs]
    output.parent.mkdir(parents=True, exist_ok=True)
    np.savez(output, **dict(zip(names, result.outputs)))
    return result.mode, result.run_ms, names
