"""Who is calling: AWS Signature Version 4 for the SageMaker protocol, bearer tokens for REST.

Keys live in a JSON file (``kiln keys create`` writes it) or the ``KILN_ACCESS_KEYS``
environment variable, both read by the service settings at start-up::

    {"keys": [{"tenant": "team-a", "account_id": "123456789012",
               "access_key_id": "KILN...", "secret_access_key": "...", "bearer_token": "..."}]}

SigV4 is recomputed here with hmac/hashlib from the request as received (method, path,
query, signed headers, body) and compared in constant time.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote

MAX_SKEW_S = 15 * 60
_AUTH = re.compile(r"^AWS4-HMAC-SHA256\s+Credential=([^,\s]+),\s*SignedHeaders=([^,\s]+),"
                   r"\s*Signature=([0-9a-f]{64})$")


@dataclass(frozen=True)
class AccessKey:
    tenant: str
    access_key_id: str
    secret_access_key: str
    bearer_token: str = ""
    account_id: str = ""

    @property
    def account(self) -> str:
        return self.account_id or str(int(hashlib.sha256(self.tenant.encode()).hexdigest(), 16)
                                      % 10**12).zfill(12)


class AuthError(Exception):
    """Refused: ``kind`` is AWS's error type, ``status`` the HTTP status."""

    def __init__(self, kind: str, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.kind, self.message, self.status = kind, message, status


def new_key(tenant: str, account_id: str = "") -> AccessKey:
    return AccessKey(tenant=tenant, access_key_id="KILN" + secrets.token_hex(8).upper(),
                     secret_access_key=secrets.token_urlsafe(30),
                     bearer_token="kiln_" + secrets.token_urlsafe(30), account_id=account_id)


def load_keys(text: str) -> list[AccessKey]:
    data = json.loads(text)
    rows = data.get("keys", []) if isinstance(data, dict) else data
    return [AccessKey(**{k: str(v) for k, v in row.items() if k in AccessKey.__dataclass_fields__})
            for row in rows]


def add_key_to_file(path: Path, key: AccessKey) -> None:
    keys = load_keys(path.read_text()) if path.exists() else []
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"keys": [asdict(k) for k in [*keys, key]]}, indent=2)
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(text + "\n")


class KeyRing:
    def __init__(self, keys: list[AccessKey]) -> None:
        self.by_id = {k.access_key_id: k for k in keys}
        self.by_token = {k.bearer_token: k for k in keys if k.bearer_token}

    def bearer(self, header: str | None) -> AccessKey:
        if not header or not header.startswith("Bearer "):
            raise AuthError("Unauthorized", "give an API token: Authorization: Bearer <token>", 401)
        for token, key in self.by_token.items():
            if hmac.compare_digest(token, header[len("Bearer "):].strip()):
                return key
        raise AuthError("Unauthorized", "the API token is not valid", 401)

    def sigv4(self, method: str, raw_path: str, query: str, headers: dict[str, str],
              body: bytes, *, now: _dt.datetime | None = None) -> tuple[AccessKey, str]:
        """Verify a SigV4-signed request; returns the caller's key and the signed region."""
        auth = headers.get("authorization")
        if not auth:
            raise AuthError("MissingAuthenticationTokenException", "Missing Authentication "
                            "Token: sign the request with AWS Signature Version 4")
        m = _AUTH.match(auth.strip())
        if not m:
            raise AuthError("IncompleteSignatureException", "the Authorization header is not an "
                            "AWS4-HMAC-SHA256 signature", 400)
        credential, signed_headers, signature = m.groups()
        parts = credential.split("/")
        if len(parts) != 5 or parts[4] != "aws4_request":
            raise AuthError("IncompleteSignatureException", f"bad credential scope {credential!r}", 400)
        key_id, day, region, service, _ = parts
        key = self.by_id.get(key_id)
        if key is None:
            raise AuthError("UnrecognizedClientException", "The security token included in the "
                            "request is invalid.", 400)
        stamp = headers.get("x-amz-date", "")
        _check_time(stamp, day, now or _dt.datetime.now(_dt.timezone.utc))
        names = signed_headers.split(";")
        if "host" not in names or any(n not in headers for n in names):
            raise AuthError("IncompleteSignatureException", "the signed headers must include "
                            "host and only headers present in the request", 400)
        canonical = "\n".join([
            method, _canonical_path(raw_path), _canonical_query(query),
            "".join(f"{n}:{' '.join(headers[n].strip().split())}\n" for n in names),
            signed_headers, headers.get("x-amz-content-sha256") or hashlib.sha256(body).hexdigest()])
        scope = f"{day}/{region}/{service}/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope,
                             hashlib.sha256(canonical.encode()).hexdigest()])
        k = ("AWS4" + key.secret_access_key).encode()
        for part in (day, region, service, "aws4_request"):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        expected = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise AuthError("InvalidSignatureException", "The request signature we calculated "
                            "does not match the signature you provided. Check your AWS Secret "
                            "Access Key and signing method.", 400)
        return key, region


def _check_time(stamp: str, day: str, now: _dt.datetime) -> None:
    try:
        when = _dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=_dt.timezone.utc)
    except ValueError:
        raise AuthError("IncompleteSignatureException", "X-Amz-Date is missing or not "
                        "YYYYMMDDTHHMMSSZ", 400) from None
    if stamp[:8] != day:
        raise AuthError("InvalidSignatureException", "the credential scope date does not match "
                        "X-Amz-Date", 400)
    if abs((now - when).total_seconds()) > MAX_SKEW_S:
        raise AuthError("InvalidSignatureException", f"Signature expired: {stamp} is more than "
                        f"{MAX_SKEW_S // 60} minutes from the server's time "
                        f"{now.strftime('%Y%m%dT%H%M%SZ')}", 400)


def _canonical_path(raw: str) -> str:
    # botocore normalizes and URI-encodes each segment (once more for non-S3 services)
    return quote(raw or "/", safe="/~")


def _canonical_query(query: str) -> str:
    pairs = sorted(parse_qsl(query, keep_blank_values=True))
    return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in pairs)
