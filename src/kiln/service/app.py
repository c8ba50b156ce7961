"""The FastAPI app factory: migrations, store, executor, and the two front doors."""

from __future__ import annotations

from contextlib import asynccontextmanager
from types import SimpleNamespace

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError

from kiln.jobs.executor import ExecutorConfig, LocalExecutor
from kiln.jobs.store import JobStore, migrate
from kiln.service import rest, sagemaker
from kiln.service.auth import KeyRing
from kiln.service.operations import Limits, Operations
from kiln.service.settings import Settings


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kilnml")
    except PackageNotFoundError:
        return "unknown"


def create_app(settings: Settings, *, start_executor: bool = True) -> FastAPI:
    """The service. The database is migrated and the executor started when the app starts."""
    __version__ = _version()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.database_url)
    store = JobStore(settings.database_url)
    if settings.broker_url:  # Celery workers elsewhere (`kiln worker`)
        from kiln.jobs.distributed import CeleryExecutor

        executor = CeleryExecutor(store, settings.broker_url,
                                  worker_timeout_s=settings.worker_timeout_s)
    else:
        executor = LocalExecutor(store, ExecutorConfig(
            state_dir=settings.state_dir, concurrency=settings.workers if start_executor else 0,
            storage_options=settings.storage_options()))
    state = SimpleNamespace(settings=settings, store=store, executor=executor,
                            keyring=KeyRing(list(settings.keys)),
                            ops=Operations(store, Limits(settings.max_active_jobs,
                                                         settings.default_max_runtime_s),
                                           submit=executor.submit))

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        # the local pool died with the previous server; Celery workers are reaped by heartbeat
        state.recovered = 0 if settings.broker_url else store.recover()
        executor.start()
        yield
        executor.shutdown()

    app = FastAPI(title="Kiln compilation jobs", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None,
                  description="Neo's compilation jobs: REST here, and SageMaker's JSON protocol "
                  "on POST / for boto3.")
    app.state.kiln = state

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return rest.rest_error("ValidationException", f"{where}: {first.get('msg', 'invalid')}")

    @app.get("/jobs", include_in_schema=False)
    async def jobs_page():
        """The live job list (HTML; its script uses the REST API with the caller's token)."""
        from fastapi.responses import HTMLResponse

        from kiln.service.page import PAGE

        return HTMLResponse(PAGE)

    @app.get("/health")
    async def health():
        return {"status": "ok", "version": __version__}

    app.include_router(rest.router(state))
    app.include_router(sagemaker.router(state))
    return app
