"""``kiln serve`` (the job service) and ``kiln keys create`` (its access keys)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from kiln.errors import KilnError

SERVICE_HINT = "install the service extra: pip install 'kilnml[service]'"
keys_app = typer.Typer(no_args_is_help=True, help="Access keys of `kiln serve` (SigV4 and bearer).")

StateDir = Annotated[Optional[Path], typer.Option(help="service state: database, keys, logs "
                                                  "(default $KILN_STATE_DIR or "
                                                  "~/.local/state/kiln)")]


def _settings(**kw):
    try:
        from kiln.service.settings import Settings
    except ImportError as exc:
        raise KilnError("invalid_options", f"`kiln serve` needs {exc.name}", hint=SERVICE_HINT) from None
    return Settings.from_env(**kw)


def serve_cmd(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8470,
    state_dir: StateDir = None,
    db_url: Annotated[Optional[str], typer.Option(help="SQLAlchemy URL, e.g. postgresql+psycopg"
                                                  "://u:p@host/kiln (default: SQLite in the "
                                                  "state dir; env KILN_DB_URL)")] = None,
    keys_file: Annotated[Optional[Path], typer.Option(help="access keys JSON (default "
                                                      "STATE_DIR/keys.json)")] = None,
    workers: Annotated[int, typer.Option(help="concurrent compiles (0: queue only)")] = 1,
    region: Annotated[str, typer.Option(help="region named in job ARNs for REST callers")] = "us-east-1",
    s3_endpoint_url: Annotated[Optional[str], typer.Option(help="S3-compatible endpoint for "
                                                           "s3:// locations (env "
                                                           "KILN_S3_ENDPOINT_URL)")] = None,
    broker: Annotated[Optional[str], typer.Option(help="Redis URL: queue jobs for `kiln worker` "
                                                  "processes instead of compiling here (env "
                                                  "KILN_BROKER_URL)")] = None,
    worker_timeout: Annotated[float, typer.Option(help="with --broker: fail a job whose worker "
                                                  "sent no heartbeat for this many seconds")] = 120,
) -> None:
    """Serve compilation jobs: SageMaker's JSON protocol on POST / (boto3) and REST on /v1."""
    settings = _settings(state_dir=state_dir, keys_file=keys_file, db_url=db_url,
                         workers=workers, region=region, s3_endpoint_url=s3_endpoint_url,
                         broker_url=broker, worker_timeout_s=worker_timeout)
    import uvicorn

    from kiln.service import create_app

    if not settings.keys:
        typer.echo(f"warning: no access keys in {keys_file or settings.keys_file}; every request "
                   "but /health is refused. Create one: kiln keys create TENANT", err=True)
    where = (f"jobs queued on {settings.broker_url}" if settings.broker_url
             else f"{settings.workers} local worker(s)")
    typer.echo(f"kiln serve: http://{host}:{port} (state {settings.state_dir}, {where})", err=True)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")


def worker_cmd(
    broker: Annotated[str, typer.Option(envvar="KILN_BROKER_URL", help="Redis URL of the queue, "
                                        "as given to `kiln serve --broker`")],
    db_url: Annotated[str, typer.Option(envvar="KILN_DB_URL", help="the server's database URL "
                                        "(shared: PostgreSQL across machines)")],
    concurrency: Annotated[int, typer.Option(help="compiles at once on this machine")] = 1,
    state_dir: StateDir = None,
    s3_endpoint_url: Annotated[Optional[str], typer.Option(help="S3-compatible endpoint (env "
                                                           "KILN_S3_ENDPOINT_URL)")] = None,
) -> None:
    """Run compilation jobs queued by `kiln serve --broker` (a Celery worker)."""
    settings = _settings(state_dir=state_dir, db_url=db_url, broker_url=broker,
                         s3_endpoint_url=s3_endpoint_url)
    from kiln.jobs.distributed import run_worker

    settings.state_dir.mkdir(parents=True, exist_ok=True)
    run_worker(broker_url=broker, db_url=settings.database_url, state_dir=settings.state_dir,
               concurrency=concurrency, storage_options=settings.storage_options())


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Argument(help="who the key belongs to; jobs are per tenant")],
    state_dir: StateDir = None,
    keys_file: Annotated[Optional[Path], typer.Option(help="default STATE_DIR/keys.json")] = None,
    account_id: Annotated[str, typer.Option(help="12-digit account id for job ARNs "
                                            "(default: derived from the tenant)")] = "",
) -> None:
    """Create an access key (SigV4 key id + secret, and a REST bearer token) for TENANT."""
    from kiln.service.auth import add_key_to_file, new_key

    settings = _settings(state_dir=state_dir)
    path = keys_file or settings.keys_file
    key = new_key(tenant, account_id)
    add_key_to_file(path, key)
    typer.echo(f"added a key for tenant {tenant!r} to {path} (restart `kiln serve` to use it)")
    typer.echo(f"aws_access_key_id     = {key.access_key_id}")
    typer.echo(f"aws_secret_access_key = {key.secret_access_key}")
    typer.echo(f"bearer token          = {key.bearer_token}")


jobs_app = typer.Typer(no_args_is_help=True, help="Compilation jobs on a `kiln serve` server "
                       "(REST API; --url/KILN_URL, --token/KILN_TOKEN).")
Url = Annotated[str, typer.Option(envvar="KILN_URL", help="server URL")]
Token = Annotated[str, typer.Option(envvar="KILN_TOKEN", help="bearer token (kiln keys create)")]


def _client(url: str, token: str):
    from kiln.service.client import JobsClient

    return JobsClient(url, token=token)


def _print(doc) -> None:
    import json

    typer.echo(json.dumps(doc, indent=2))


@jobs_app.command("create")
def jobs_create(
    name: Annotated[str, typer.Argument(help="job name (1-63 of [a-zA-Z0-9-])")],
    model: Annotated[str, typer.Option(help="s3://, file:// or absolute path of the model "
                                       "(.onnx or Neo's model.tar.gz)")],
    output: Annotated[str, typer.Option(help="output location (s3://, file://, path)")],
    target: Annotated[Optional[str], typer.Option(help="TargetDevice, e.g. rasp4b")] = None,
    platform: Annotated[Optional[str], typer.Option(help="TargetPlatform OS/ARCH\\[/ACCEL]")] = None,
    input_shape: Annotated[Optional[str], typer.Option(help="DataInputConfig JSON")] = None,
    compiler_options: Annotated[Optional[str], typer.Option(help="CompilerOptions JSON")] = None,
    max_runtime: Annotated[int, typer.Option(help="MaxRuntimeInSeconds")] = 900,
    wait: Annotated[bool, typer.Option(help="wait until the job ends")] = False,
    url: Url = "http://127.0.0.1:8470", token: Token = "",
) -> None:
    """Create a compilation job; prints its ARN (and, with --wait, the finished job)."""
    tp = None
    if platform:
        parts = platform.split("/")
        tp = dict(zip(("Os", "Arch", "Accelerator"), parts))
    client = _client(url, token)
    typer.echo(client.create(name, model=model, output=output, target=target, platform=tp,
                             input_shapes=input_shape, compiler_options=compiler_options,
                             max_runtime_s=max_runtime))
    if wait:
        _print(client.wait(name))


@jobs_app.command("describe")
def jobs_describe(name: str, url: Url = "http://127.0.0.1:8470", token: Token = "") -> None:
    """Print one job as JSON."""
    _print(_client(url, token).describe(name))


@jobs_app.command("list")
def jobs_list(
    status: Annotated[Optional[str], typer.Option(help="StatusEquals")] = None,
    name_contains: Annotated[Optional[str], typer.Option(help="NameContains")] = None,
    sort_by: Annotated[str, typer.Option(help="Name, CreationTime or Status")] = "CreationTime",
    sort_order: Annotated[str, typer.Option(help="Ascending or Descending")] = "Ascending",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    url: Url = "http://127.0.0.1:8470", token: Token = "",
) -> None:
    """List jobs (every page)."""
    rows = _client(url, token).list(status=status, name_contains=name_contains, sort_by=sort_by,
                                    sort_order=sort_order)
    if as_json:
        _print(rows)
        return
    for r in rows:
        target = r.get("CompilationTargetDevice") or "/".join(
            r.get(f"CompilationTargetPlatform{k}", "") for k in ("Os", "Arch")).strip("/")
        typer.echo(f"{r['CompilationJobName']:<40} {r['CompilationJobStatus']:<10} {target:<16} "
                   f"{r['CreationTime']}")


@jobs_app.command("stop")
def jobs_stop(name: str, url: Url = "http://127.0.0.1:8470", token: Token = "") -> None:
    """Stop a job (its compile gets SIGTERM, then SIGKILL)."""
    _client(url, token).stop(name)


@jobs_app.command("delete")
def jobs_delete(name: str, url: Url = "http://127.0.0.1:8470", token: Token = "") -> None:
    """Delete a COMPLETED, FAILED or STOPPED job (the artifact stays)."""
    _client(url, token).delete(name)


@jobs_app.command("logs")
def jobs_logs(name: str, url: Url = "http://127.0.0.1:8470", token: Token = "") -> None:
    """Print the compile's output."""
    typer.echo(_client(url, token).logs(name), nl=False)
