"""The local executor: N worker threads, each running one compile at a time in a subprocess.

A worker claims the oldest STARTING job, fetches the model, runs
``python -m kiln.cli.main compile ...`` in its own process group with the job's time limit,
watches the store for a stop request (SIGTERM, then SIGKILL after a grace period), uploads the
artifact and records its BLAKE2 digest. The service process itself never imports the compiler.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from kiln.jobs import failure
from kiln.jobs.locations import JobFailure, blake2, fetch, model_file, output_uri, upload
from kiln.jobs.model import (COMPLETED, FAILED, STOPPED, STOPPING, now, target_args)
from kiln.jobs.store import JobRow, JobStore

STOP_GRACE_S = 5.0
HEARTBEAT_S = 2.0  # a worker's beat; the server reaps after worker_timeout_s (>= 3 beats)
LOG_TAIL_BYTES = 32 * 1024


@dataclass
class ExecutorConfig:
    state_dir: Path
    concurrency: int = 1
    storage_options: dict = field(default_factory=dict)
    poll_s: float = 0.5
    python: str = sys.executable


def log_path(state_dir: Path, job_id: int) -> Path:
    return state_dir / "logs" / f"{job_id}.log"


class LocalExecutor:
    """Runs queued jobs in ``concurrency`` worker threads (0: queue only, nothing runs)."""

    def __init__(self, store: JobStore, config: ExecutorConfig) -> None:
        self.store, self.cfg = store, config
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._procs: dict[int, subprocess.Popen] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        for i in range(self.cfg.concurrency):
            t = threading.Thread(target=self._loop, name=f"kiln-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def shutdown(self) -> None:
        """Stop taking jobs; running compiles are killed and their jobs FAILED (server stop)."""
        self._stop.set()
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            _terminate(proc)
        for t in self._threads:
            t.join(timeout=STOP_GRACE_S + 5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                row = self.store.claim_next()
            except Exception:  # database busy or gone for a moment: try again
                row = None
            if row is None:
                self._stop.wait(self.cfg.poll_s)
                continue
            self.run(row)

    def run(self, row: JobRow) -> None:
        """Take one claimed (INPROGRESS) job to COMPLETED, FAILED or STOPPED."""
        work = self.cfg.state_dir / "work" / str(row.id)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        log = log_path(self.cfg.state_dir, row.id)
        log.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._heartbeats(row.id):  # ended before the job's last write below
                fields = self._compile(row, work, log)
            self._finish(row.id, COMPLETED, **fields)
        except JobFailure as exc:
            self._finish(row.id, FAILED, FailureReason=exc.reason)
        except _Stopped:
            self._finish(row.id, STOPPED)
        except Exception as exc:  # a fault of Kiln's: the job must not stay INPROGRESS
            self._finish(row.id, FAILED, FailureReason=failure.reason(
                "ServerError", f"{type(exc).__name__}: {exc}"))
        finally:
            shutil.rmtree(work, ignore_errors=True)

    @contextlib.contextmanager
    def _heartbeats(self, job_id: int):
        """Heartbeats for the whole job, fetch and upload included, from a thread of its own,
        so that no slow step (a cold ``kiln compile --help``, a large download) looks like a
        dead worker to the server's reaper. The thread is joined before the job's final
        record is written, so a late beat never overwrites it."""
        done = threading.Event()

        def beat() -> None:
            while not done.wait(HEARTBEAT_S):
                try:
                    self.store.heartbeat(job_id)
                except Exception:  # the database is busy for a moment: the next beat
                    pass

        thread = threading.Thread(target=beat, daemon=True, name=f"kiln-heartbeat-{job_id}")
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def submit(self, job_id: int) -> None:
        """A new job was queued (the local workers poll the store, so nothing to do)."""

    def _finish(self, job_id: int, status: str, **fields) -> None:
        current = self.store.by_id(job_id)
        if current is None:
            return
        if current.status == STOPPING and status == COMPLETED:
            status, fields = STOPPED, {}  # a stop request wins over a late success
        log = log_path(self.cfg.state_dir, job_id)
        if log.exists():  # kept in the record too, for workers on other machines
            fields["_log"] = log.read_bytes()[-LOG_TAIL_BYTES:].decode(errors="replace")
        self.store.change(job_id, status, CompilationEndTime=now(), **fields)

    def _compile(self, row: JobRow, work: Path, log: Path) -> dict:
        rec = row.record
        inp, outp = rec["InputConfig"], rec["OutputConfig"]
        frameworks = _compiler_takes_framework(self.cfg.python)
        if inp["Framework"] != "ONNX" and not frameworks:
            raise JobFailure(failure.reason("ClientError: InputConfiguration", f"Framework "
                             f"{inp['Framework']} is not supported by this Kiln server yet; "
                             "export the model to ONNX"))
        deadline = row.record["StoppingCondition"]["MaxRuntimeInSeconds"] + time.time()
        model = fetch(inp["S3Uri"], work, self.cfg.storage_options)
        if inp["Framework"] == "ONNX":
            model = model_file(model, work)  # Neo's model.tar.gz: the one .onnx inside
        device, platform = target_args(outp)
        suffix = device or platform.replace("/", "_")
        artifact = work / "out" / f"{model.name.split('.')[0]}-{suffix}.tar.gz"
        cmd = [self.cfg.python, "-m", "kiln.cli.main", "compile", str(model), "-o", str(artifact)]
        cmd += ["--target", device] if device else ["--platform", platform]
        if frameworks and inp["Framework"] != "ONNX":  # the importer unpacks Neo's package
            cmd += ["--framework", inp["Framework"]]
            if inp.get("FrameworkVersion"):
                cmd += ["--framework-version", inp["FrameworkVersion"]]
        if inp.get("DataInputConfig"):
            cmd += ["--input-shape", inp["DataInputConfig"]]
        if outp.get("CompilerOptions"):
            cmd += ["--compiler-options", outp["CompilerOptions"]]
        self._supervise(row, cmd, log, deadline)
        uri = output_uri(outp["S3OutputLocation"], artifact.name)
        fields = {"ModelArtifacts": {"S3ModelArtifacts": uri},
                  "ModelDigests": {"ArtifactDigest": blake2(artifact)}}
        derived = _derived_shapes(artifact)
        if derived and not inp.get("DataInputConfig"):
            fields["DerivedInformation"] = {"DerivedDataInputConfig": json.dumps(derived)}
        upload(artifact, uri, self.cfg.storage_options)
        return fields

    def _supervise(self, row: JobRow, cmd: list[str], log: Path, deadline: float) -> None:
        with open(log, "ab") as out:
            out.write(f"$ {' '.join(cmd)}\n".encode())
            out.flush()
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=_die_with_parent,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1",
                                         "COLUMNS": "200"})
        with self._lock:
            self._procs[row.id] = proc
        try:
            while True:
                try:
                    rc = proc.wait(timeout=self.cfg.poll_s)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if self._stop.is_set():
                    _terminate(proc)
                    raise JobFailure(failure.RESTARTED)
                if time.time() > deadline:
                    _terminate(proc)
                    raise JobFailure(failure.TIMEOUT.format(
                        seconds=row.record["StoppingCondition"]["MaxRuntimeInSeconds"]))
                current = self.store.by_id(row.id)
                if current is None or current.status == STOPPING:
                    _terminate(proc)
                    raise _Stopped()
        finally:
            with self._lock:
                self._procs.pop(row.id, None)
        if rc != 0:
            raise JobFailure(_reason_from_log(rc, log))


@functools.lru_cache(maxsize=4)
def _compiler_takes_framework(python: str) -> bool:
    """Whether this Kiln's ``kiln compile`` has ``--framework`` (importers beyond ONNX)."""
    try:
        out = subprocess.run([python, "-m", "kiln.cli.main", "compile", "--help"],
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, "COLUMNS": "200"})
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--framework" in out.stdout


class _Stopped(Exception):
    pass


def _load_prctl():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()  # resolved here: the child of a threaded parent must not import


def _die_with_parent() -> None:
    """In the child: SIGKILL when the worker dies (Linux prctl PR_SET_PDEATHSIG), so a killed
    worker leaves no compile behind."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)


def _terminate(proc: subprocess.Popen) -> None:
    """SIGTERM to the compile's process group, SIGKILL after :data:`STOP_GRACE_S`."""
    for sig, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _reason_from_log(rc: int, log: Path) -> str:
    """FailureReason from the compile's exit status and its one-line ``error[code]: ...``."""
    if rc < 0:
        return failure.WORKER_DIED.format(status=rc)
    code = failure.code_of_exit_status(rc)
    lines = log.read_text(errors="replace").splitlines()
    message = next((ln for ln in reversed(lines) if ln.startswith("error[")), "")
    if message.startswith(f"error[{code}]: "):
        message = message[len(f"error[{code}]: "):]
    if not message:
        return failure.WORKER_DIED.format(status=rc)
    return failure.from_code(code, message)


def _derived_shapes(artifact: Path) -> dict | None:
    """``{input: shape}`` when Kiln took the shapes from the model itself, from the manifest."""
    with tarfile.open(artifact, "r:gz") as tar:
        member = tar.extractfile("manifest.json")
        manifest = json.loads(member.read()) if member else {}
    if not manifest.get("compile_options", {}).get("derived_input_shapes"):
        return None
    return {t["name"]: t["shape"] for t in manifest.get("inputs", [])}
