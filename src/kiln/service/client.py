"""A small Python client for the REST API of ``kiln serve`` (standard library only).

>>> jobs = JobsClient("http://127.0.0.1:8470", token="kiln_...")          # doctest: +SKIP
>>> jobs.create("mlp-c5", model="s3://models/mlp.onnx", output="s3://models/out",
...             target="ml_c5")                                           # doctest: +SKIP
>>> jobs.wait("mlp-c5")["CompilationJobStatus"]                           # doctest: +SKIP
'COMPLETED'
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request

from kiln.errors import KilnError

FINISHED = ("COMPLETED", "FAILED", "STOPPED")


class JobsClient:
    """Create, describe, list, stop and delete compilation jobs; errors are :class:`KilnError`
    (code ``job_request_failed``) carrying the server's error code and message."""

    def __init__(self, url: str, *, token: str, timeout: float = 30.0) -> None:
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    def _call(self, method: str, path: str, body: dict | None = None, query: dict | None = None,
              *, raw: bool = False):
        q = {k: v for k, v in (query or {}).items() if v is not None}
        url = f"{self.url}/v1{path}" + (f"?{urllib.parse.urlencode(q)}" if q else "")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                text = resp.read().decode()
        except urllib.error.HTTPError as exc:
            try:
                err = json.loads(exc.read().decode())["error"]
            except (ValueError, KeyError, TypeError):
                err = {"code": f"http_{exc.code}", "message": exc.reason}
            raise KilnError("job_request_failed", f"{err['code']}: {err['message']}") from None
        except urllib.error.URLError as exc:
            raise KilnError("job_request_failed", f"cannot reach {self.url}: {exc.reason}",
                            hint="is `kiln serve` running? check --url / KILN_URL") from None
        return text if raw else json.loads(text or "{}")

    def create(self, name: str, *, model: str, output: str, target: str | None = None,
               platform: dict | None = None, input_shapes: str | None = None,
               compiler_options: str | None = None, framework: str = "ONNX",
               max_runtime_s: int = 900, tags: dict | None = None) -> str:
        """Queue a job; returns its ARN. ``platform`` is ``{"Os", "Arch"[, "Accelerator"]}``."""
        inp = {"S3Uri": model, "Framework": framework}
        if input_shapes:
            inp["DataInputConfig"] = input_shapes
        out: dict = {"S3OutputLocation": output}
        out.update({"TargetDevice": target} if target else {"TargetPlatform": platform})
        if compiler_options:
            out["CompilerOptions"] = compiler_options
        body = {"CompilationJobName": name, "InputConfig": inp, "OutputConfig": out,
                "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime_s},
                "Tags": [{"Key": k, "Value": v} for k, v in (tags or {}).items()]}
        return self._call("POST", "/compilation-jobs", body)["CompilationJobArn"]

    def describe(self, name: str) -> dict:
        return self._call("GET", f"/compilation-jobs/{urllib.parse.quote(name)}")

    def list(self, **filters) -> list[dict]:
        """Every job matching ``filters`` (REST query names: ``status``, ``name_contains``,
        ``sort_by`` ...), following NextToken."""
        rows, token = [], None
        while True:
            page = self._call("GET", "/compilation-jobs", query={**filters, "max_results": 100,
                                                                 "next_token": token})
            rows += page["CompilationJobSummaries"]
            token = page.get("NextToken")
            if not token:
                return rows

    def stop(self, name: str) -> None:
        self._call("POST", f"/compilation-jobs/{urllib.parse.quote(name)}/stop")

    def delete(self, name: str) -> None:
        self._call("DELETE", f"/compilation-jobs/{urllib.parse.quote(name)}")

    def logs(self, name: str) -> str:
        return self._call("GET", f"/compilation-jobs/{urllib.parse.quote(name)}/logs", raw=True)

    def wait(self, name: str, *, timeout_s: float = 3600, poll_s: float = 2.0) -> dict:
        """Describe until the job is COMPLETED, FAILED or STOPPED."""
        deadline = time.time() + timeout_s
        while True:
            job = self.describe(name)
            if job["CompilationJobStatus"] in FINISHED or time.time() > deadline:
                return job
            time.sleep(poll_s)
