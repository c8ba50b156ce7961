"""Where Kiln keeps downloaded runtimes and built helpers (``KILN_CACHE_DIR``, else ~/.cache/kiln)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    root = os.environ.get("KILN_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kiln")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
