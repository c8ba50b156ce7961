"""Jobs in a SQL database (SQLAlchemy 2): SQLite by default, PostgreSQL by URL.

One row per job: the columns the list filters need, plus the job's document as a JSON column
with a schema version (never pickle). The schema is created by the Alembic migrations in
``kiln/jobs/migrations`` (:func:`migrate`), not by ``create_all``.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import (JSON, Float, Integer, String, UniqueConstraint, create_engine, event,
                        func, select, update)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from kiln.jobs import failure
from kiln.jobs.model import (ACTIVE, FINISHED, INPROGRESS, RECORD_SCHEMA_VERSION, STARTING,
                             STOPPED, STOPPING, JobError, NewJob, check_transition, now)


class Base(DeclarativeBase):
    pass


class JobRow(Base):
    __tablename__ = "compilation_jobs"
    __table_args__ = (UniqueConstraint("tenant", "name", name="uq_jobs_tenant_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(128), index=True, nullable=False)
    name: Mapped[str] = mapped_column(String(63))
    status: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[float] = mapped_column(Float)
    modified_at: Mapped[float] = mapped_column(Float)
    schema_version: Mapped[int] = mapped_column(Integer)
    record: Mapped[dict] = mapped_column(JSON)

    def describe(self) -> dict:
        """DescribeCompilationJob's fields (timestamps as epoch seconds)."""
        public = {k: v for k, v in self.record.items() if not k.startswith("_")}
        return {**public, "CompilationJobStatus": self.status,
                "CreationTime": self.created_at, "LastModifiedTime": self.modified_at}


SORT_COLUMNS = {"Name": JobRow.name, "CreationTime": JobRow.created_at, "Status": JobRow.status}


def migrate(db_url: str) -> None:
    """Bring the database at ``db_url`` to the newest schema (Alembic ``upgrade head``)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    cfg.set_main_option("sqlalchemy.url", db_url.replace("%", "%%"))
    command.upgrade(cfg, "head")


def make_engine(db_url: str):
    if db_url.startswith("sqlite"):
        engine = create_engine(db_url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _wal(dbapi_conn, _record):  # many readers beside one writer
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
        return engine
    return create_engine(db_url, pool_pre_ping=True)


class JobStore:
    """Create, read, list, change and delete jobs; every read is scoped to one tenant."""

    def __init__(self, db_url: str) -> None:
        self.engine = make_engine(db_url)
        # names compare as SQLite does whatever the database's collation: bytewise for SortBy
        # Name, ASCII case ignored for NameContains (names are ASCII)
        self._bytewise = self.engine.dialect.name == "postgresql"

    def create(self, tenant: str, job: NewJob, arn: str, *, active_limit: int) -> JobRow:
        stamp = now()
        record = {**job.record, "CompilationJobArn": arn}
        with Session(self.engine, expire_on_commit=False) as s:
            active = s.scalar(select(func.count()).select_from(JobRow).where(
                JobRow.tenant == tenant, JobRow.status.in_(ACTIVE)))
            if active >= active_limit:
                raise JobError("ResourceLimitExceeded", f"this account already has {active} "
                               f"active compilation jobs (limit {active_limit})")
            row = JobRow(tenant=tenant, name=job.name, status=STARTING, created_at=stamp,
                         modified_at=stamp, schema_version=RECORD_SCHEMA_VERSION, record=record)
            s.add(row)
            try:
                s.commit()
            except IntegrityError:
                raise JobError("ResourceInUse", f"Compilation job {job.name} already exists "
                               f"({arn})") from None
            return row

    def get(self, tenant: str, name: str) -> JobRow:
        with Session(self.engine, expire_on_commit=False) as s:
            row = s.scalar(select(JobRow).where(JobRow.tenant == tenant, JobRow.name == name))
        if row is None:
            raise JobError("ResourceNotFound", f"Could not find compilation job {name!r}")
        return row

    def by_id(self, job_id: int) -> JobRow | None:
        with Session(self.engine, expire_on_commit=False) as s:
            return s.get(JobRow, job_id)

    def list(self, tenant: str, *, filters: dict, sort_by: str, descending: bool,
             offset: int, limit: int) -> tuple[list[JobRow], bool]:
        """One page of jobs and whether more follow."""
        q = select(JobRow).where(JobRow.tenant == tenant)
        if filters.get("NameContains"):
            q = q.where(JobRow.name.icontains(filters["NameContains"], autoescape=True))
        if filters.get("StatusEquals"):
            q = q.where(JobRow.status == filters["StatusEquals"])
        for key, col in (("CreationTime", JobRow.created_at),
                         ("LastModifiedTime", JobRow.modified_at)):
            if filters.get(key + "After") is not None:
                q = q.where(col > filters[key + "After"])
            if filters.get(key + "Before") is not None:
                q = q.where(col < filters[key + "Before"])
        col = SORT_COLUMNS[sort_by]
        if sort_by == "Name" and self._bytewise:
            col = col.collate("C")
        order = (col.desc(), JobRow.id.desc()) if descending else (col.asc(), JobRow.id.asc())
        with Session(self.engine) as s:
            rows = list(s.scalars(q.order_by(*order).offset(offset).limit(limit + 1)))
        return rows[:limit], len(rows) > limit

    def delete(self, tenant: str, name: str) -> None:
        row = self.get(tenant, name)
        if row.status not in FINISHED:
            raise JobError("ValidationException", f"Compilation job {name} is {row.status}; only "
                           "COMPLETED, FAILED or STOPPED jobs can be deleted")
        with Session(self.engine) as s:
            s.execute(JobRow.__table__.delete().where(JobRow.id == row.id))
            s.commit()

    def change(self, job_id: int, status: str | None = None, **fields) -> JobRow:
        """Move job ``job_id`` to ``status`` (checked against Neo's state machine) and merge
        ``fields`` into its record."""
        with Session(self.engine, expire_on_commit=False) as s:
            row = s.get(JobRow, job_id, with_for_update=True)
            if status is not None and status != row.status:
                check_transition(row.status, status)
                row.status = status
            if fields:
                row.record = {**row.record, **fields}
            row.modified_at = now()
            s.commit()
            return row

    def request_stop(self, tenant: str, name: str) -> JobRow:
        """StopCompilationJob: a queued job stops at once, a running one becomes STOPPING."""
        row = self.get(tenant, name)
        if row.status == STARTING:
            with Session(self.engine) as s:  # only if no worker claimed it meanwhile
                done = s.execute(update(JobRow).where(JobRow.id == row.id, JobRow.status ==
                                 STARTING).values(status=STOPPING, modified_at=now())).rowcount
                s.commit()
            if done:
                return self.change(row.id, STOPPED, CompilationEndTime=now())
            row = self.get(tenant, name)
        if row.status == INPROGRESS:
            return self.change(row.id, STOPPING)
        if row.status in (STOPPING, STOPPED):
            return row
        raise JobError("ValidationException", f"Compilation job {name} is {row.status} and "
                       "cannot be stopped")

    def claim_next(self) -> JobRow | None:
        """Take the oldest STARTING job for this worker (INPROGRESS), or None."""
        with Session(self.engine) as s:
            ids = list(s.scalars(select(JobRow.id).where(JobRow.status == STARTING)
                                 .order_by(JobRow.id).limit(5)))
        for job_id in ids:
            row = self.claim(job_id)
            if row is not None:
                return row
        return None

    def claim(self, job_id: int, worker: str = "") -> JobRow | None:
        """STARTING -> INPROGRESS for job ``job_id`` if no one else took (or stopped) it."""
        stamp = now()
        with Session(self.engine) as s:
            got = s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.status ==
                            STARTING).values(status=INPROGRESS, modified_at=stamp)).rowcount
            s.commit()
        if not got:
            return None
        return self.change(job_id, CompilationStartTime=stamp, _worker=worker, _heartbeat=stamp)

    def heartbeat(self, job_id: int) -> None:
        """A worker says it is still running job ``job_id`` (status unchanged)."""
        with Session(self.engine) as s:
            row = s.get(JobRow, job_id)
            if row is not None:
                row.record = {**row.record, "_heartbeat": now()}
                s.commit()

    def reap(self, stale_s: float) -> int:
        """Jobs whose worker stopped sending heartbeats for ``stale_s`` end FAILED (or STOPPED
        when a stop was asked for): a dead worker never leaves a job INPROGRESS."""
        limit = now() - stale_s
        with Session(self.engine) as s:
            rows = list(s.scalars(select(JobRow).where(JobRow.status.in_((INPROGRESS, STOPPING)))))
        dead = [r for r in rows if r.record.get("_heartbeat", r.modified_at) < limit]
        for row in dead:
            if row.status == STOPPING:
                self.change(row.id, STOPPED, CompilationEndTime=now())
            else:
                who = row.record.get("_worker") or "its worker"
                self.change(row.id, "FAILED", CompilationEndTime=now(), FailureReason=failure.reason(
                    "ServerError", f"the worker running the job ({who}) stopped responding "
                    f"for {stale_s:.0f} s; create the job again"))
        return len(dead)

    def recover(self) -> int:
        """At start-up: jobs a dead server left INPROGRESS fail, STOPPING ones end STOPPED."""
        with Session(self.engine) as s:
            stuck = list(s.scalars(select(JobRow).where(JobRow.status.in_((INPROGRESS, STOPPING)))))
        for row in stuck:
            if row.status == INPROGRESS:
                self.change(row.id, "FAILED", FailureReason=failure.RESTARTED,
                            CompilationEndTime=now())
            else:
                self.change(row.id, STOPPED, CompilationEndTime=now())
        return len(stuck)
