"""Service settings: built once at the edge (``kiln serve`` options and environment)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from kiln.service.auth import AccessKey, load_keys


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "kiln"


@dataclass(frozen=True)
class Settings:
    """Everything ``kiln serve`` decides; environment variables are read only in
    :meth:`from_env`."""

    state_dir: Path = field(default_factory=default_state_dir)
    db_url: str | None = None
    keys: tuple[AccessKey, ...] = ()
    workers: int = 1
    region: str = "us-east-1"
    max_active_jobs: int = 100
    default_max_runtime_s: int = 900
    max_request_bytes: int = 1 << 20
    broker_url: str | None = None
    worker_timeout_s: float = 120.0
    s3_endpoint_url: str | None = None
    s3_key: str | None = None
    s3_secret: str | None = None
    s3_region: str | None = None

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.state_dir / 'jobs.sqlite'}"

    @property
    def keys_file(self) -> Path:
        return self.state_dir / "keys.json"

    def storage_options(self) -> dict:
        """S3 settings for :mod:`kiln.jobs.locations` (None: boto3's usual AWS settings)."""
        return {"endpoint_url": self.s3_endpoint_url, "key": self.s3_key,
                "secret": self.s3_secret, "region": self.s3_region}

    @classmethod
    def from_env(cls, *, state_dir: Path | None = None, keys_file: Path | None = None,
                 **overrides) -> "Settings":
        """Settings with keys from ``keys_file`` (default ``STATE_DIR/keys.json``) and
        ``KILN_ACCESS_KEYS``, S3 from ``KILN_S3_ENDPOINT_URL`` / ``KILN_S3_ACCESS_KEY_ID`` /
        ``KILN_S3_SECRET_ACCESS_KEY``."""
        state = Path(state_dir or os.environ.get("KILN_STATE_DIR") or default_state_dir())
        path = keys_file or state / "keys.json"
        keys = load_keys(path.read_text()) if path.exists() else []
        if os.environ.get("KILN_ACCESS_KEYS"):
            keys += load_keys(os.environ["KILN_ACCESS_KEYS"])
        env = {"db_url": os.environ.get("KILN_DB_URL"),
               "broker_url": os.environ.get("KILN_BROKER_URL"),
               "s3_endpoint_url": os.environ.get("KILN_S3_ENDPOINT_URL"),
               "s3_key": os.environ.get("KILN_S3_ACCESS_KEY_ID"),
               "s3_secret": os.environ.get("KILN_S3_SECRET_ACCESS_KEY"),
               "s3_region": os.environ.get("KILN_S3_REGION")}
        merged = {k: v for k, v in env.items() if v}
        merged.update({k: v for k, v in overrides.items() if v is not None})
        return cls(state_dir=state, keys=tuple(keys), **merged)
