"""The artifact: manifest.json + model library + runtime bundle, packed as one .tar.gz.

This package never imports tvm: devices and the service read artifacts without the compiler.
"""

from kiln.artifact.archive import pack, unpack
from kiln.artifact.manifest import MANIFEST_NAME, SCHEMA_VERSION, Manifest, read_manifest

__all__ = ["MANIFEST_NAME", "SCHEMA_VERSION", "Manifest", "pack", "read_manifest", "unpack"]
