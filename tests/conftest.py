"""Shared fixtures: a real database (SQLite, or PostgreSQL when LEVERE_TEST_DATABASE_URL is set), a real
SMTP server on loopback, the service context, the API and a live HTTP server for CLI tests.

Every database is built through the Alembic migrations: once into a template per test session, then
copied for each test (a file copy on SQLite, ``CREATE DATABASE ... TEMPLATE`` on PostgreSQL).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient

from levere.api.app import create_app
from levere.config import SecureSettings, Settings, SmtpSettings, SyncSettings
from levere.context import Context
from levere.crypt4gh import MasterKeys
from levere.db.migrate import upgrade
from levere.db.models import JobRun
from levere.jobs.queue import build_queue
from tests.processes import stop_gracefully

PG_URL = os.environ.get("LEVERE_TEST_DATABASE_URL", "")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- SMTP ---------------------------------------------------------------------------------------


@dataclass
class Mailbox:
    messages: list[Message] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        with self.lock:
            self.messages.append(message_from_bytes(envelope.content))  # type: ignore[attr-defined]
        return "250 Message accepted for delivery"

    def clear(self) -> None:
        with self.lock:
            self.messages.clear()

    def to(self, address: str) -> list[Message]:
        with self.lock:
            return [m for m in self.messages if address.lower() in m["To"].lower()]

    def wait_for(self, address: str, subject_part: str, timeout: float = 10) -> Message:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.to(address):
                if subject_part in m["Subject"]:
                    return m
            time.sleep(0.05)
        raise AssertionError(
            f"no e-mail to {address} about {subject_part!r}; got {[m['Subject'] for m in self.to(address)]}"
        )


def body_of(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield mailbox, port
    controller.stop()


@pytest.fixture
def mailbox(smtp_server: tuple[Mailbox, int]) -> Mailbox:
    smtp_server[0].clear()
    return smtp_server[0]


# --- databases ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if PG_URL:
        name = f"levere_tpl_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(f"{PG_URL}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        upgrade(f"{PG_URL}/{name}")
        sa.create_engine(f"{PG_URL}/{name}").dispose()
        yield name
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
    else:
        path = tmp_path_factory.mktemp("template") / "template.db"
        upgrade(f"sqlite:///{path}")
        yield str(path)


@pytest.fixture
def database_url(template_db: str, tmp_path: Path) -> Iterator[str]:
    with fresh_database(template_db, tmp_path) as url:
        yield url


@contextmanager
def fresh_database(template_db: str, folder: Path) -> Iterator[str]:
    """A database copied from the migrated template (a file in ``folder`` on SQLite)."""
    if PG_URL:
        name = f"levere_t_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(f"{PG_URL}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
        yield f"{PG_URL}/{name}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
    else:
        path = folder / "levere.db"
        shutil.copyfile(template_db, path)
        yield f"sqlite:///{path}"


# --- the service --------------------------------------------------------------------------------


def master_key_file(folder: Path, key_id: str = "test-1") -> Path:
    """A master key file for the secure zone's wrapped keys, readable by its owner only."""
    path = folder / "master.keys"
    path.write_text(MasterKeys.new_line(key_id))
    path.chmod(0o600)
    return path


@pytest.fixture
def settings(database_url: str, tmp_path: Path, smtp_server: tuple[Mailbox, int]) -> Settings:
    return Settings(
        mode="development",
        data_dir=tmp_path / "data",
        database_url=database_url,
        smtp=SmtpSettings(host="127.0.0.1", port=smtp_server[1], enabled=True, sender="levere@test.invalid"),
        public_url="http://levere.test",
        queue_url="memory",
        secure=SecureSettings(master_key_file=master_key_file(tmp_path)),
    )


@pytest.fixture
def ctx(settings: Settings) -> Iterator[Context]:
    context = Context.build(settings)
    build_queue(context, immediate=True)  # jobs run at once, in-process: tests see their effects
    yield context
    context.close()


@pytest.fixture
def client(ctx: Context) -> Iterator[TestClient]:
    with TestClient(create_app(ctx, start_worker=False)) as test_client:
        yield test_client


@dataclass
class LiveServer:
    url: str
    ctx: Context


@pytest.fixture
def live_server(ctx: Context) -> Iterator[LiveServer]:
    """The API on a real loopback port, served by uvicorn in a thread (for CLI and protocol tests)."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        create_app(ctx, start_worker=False), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    yield LiveServer(url=f"http://127.0.0.1:{port}", ctx=ctx)
    server.should_exit = True  # what uvicorn's own SIGTERM handler does
    thread.join(timeout=10)
    assert not thread.is_alive(), "the test server did not stop within 10 s"


@pytest.fixture
def queue_file(tmp_path: Path) -> Path:
    return tmp_path / "queue.db"


@pytest.fixture
def producer(settings: Settings, queue_file: Path) -> Iterator[Context]:
    """The side that asks for work (as the API does): it only puts tasks in the queue file."""
    ctx = Context.build(
        settings.model_copy(
            update={"queue_url": f"sqlite:///{queue_file}", "sync": SyncSettings(lanes=4, lease_seconds=2)}
        )
    )
    build_queue(ctx)
    yield ctx
    ctx.close()


@pytest.fixture
def workers(
    settings: Settings, queue_file: Path, tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(name: str, **sync_settings: Any) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEVERE_")}
        env |= {
            "LEVERE_DATABASE_URL": str(settings.database_url),
            "LEVERE_DATA_DIR": str(settings.data_dir),
            "LEVERE_QUEUE_URL": f"sqlite:///{queue_file}",
            "LEVERE_PUBLIC_URL": settings.public_url,
            "LEVERE_SMTP__ENABLED": "true",
            "LEVERE_SMTP__HOST": settings.smtp.host,
            "LEVERE_SMTP__PORT": str(settings.smtp.port),
            "LEVERE_SMTP__SENDER": settings.smtp.sender,
        }
        env |= {f"LEVERE_SYNC__{k.upper()}": str(v) for k, v in sync_settings.items()}
        log = open(tmp_path / f"worker-{name}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "levere.cli.main", "worker", "--threads", "2"],
            env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            stop_gracefully(proc)


def wait_for(check: Callable[[], Any], timeout: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def job(ctx: Context, run_id: str) -> JobRun:
    with ctx.tx() as session:
        run = session.get(JobRun, run_id)
        assert run is not None
        return run


# --- what a plain `pytest` left out -------------------------------------------------------------

#: words in a skip's reason that name a server the suite did not have, and how to get it
_MISSING_SERVERS = {
    "S3": "a real S3 server (LEVERE_TEST_S3_*; `make test` starts Ceph radosgw)",
    "PostgreSQL": "PostgreSQL (LEVERE_TEST_DATABASE_URL; `make test` runs the suite on it too)",
    "chromium": "Debian's chromium (`make test` installs it)",
    "node": "Node.js and the test OpenID provider (`make test` installs them)",
}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say in the summary which servers were missing and how many tests that skipped, so that a
    plain ``pytest`` that skipped the S3 tests does not pass for the whole suite."""
    counts: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        for word in _MISSING_SERVERS:
            if word.lower() in reason.lower():
                counts[word] = counts.get(word, 0) + 1
    if not counts:
        return
    terminalreporter.section("tests skipped for want of a server")
    for word, count in counts.items():
        terminalreporter.write_line(f"{count} tests skipped: they need {_MISSING_SERVERS[word]}")
    terminalreporter.write_line("`make test` runs the whole suite with every server it needs.")
