"""A live levere service for CLI tests, and the CLI run as a real subprocess against it.

The CLI runs as a subprocess (so that it can be killed) against the API served by uvicorn on a
loopback port, in a thread of the test process or, when the test kills the service, in a process of
its own. The app is wrapped to count the request bytes it receives: that is how the tests prove what
a resumed transfer did *not* send again.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from levere.api.app import create_app
from levere.context import Context
from levere.db.models import Delivery, Upload
from levere.domain.deliveries import UploadState
from tests.conftest import LiveServer, free_port
from tests.helpers import basic_world, provisioned_project, token_for

MiB = 1024 * 1024


@dataclass
class Traffic:
    """Request-body bytes the service received, per (method, path); ``delay`` slows uploads down."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    received: dict[tuple[str, str], int] = field(default_factory=dict)
    requests: dict[tuple[str, str], int] = field(default_factory=dict)
    ranges: list[tuple[str, str]] = field(default_factory=list)  # (path, Range header) of each GET
    delay: float = 0.0  # seconds to sleep per body message received by a PATCH or POST
    send_delay: float = 0.0  # seconds to sleep per body message sent by a GET

    def add(self, method: str, path: str, nbytes: int) -> None:
        with self.lock:
            self.received[(method, path)] = self.received.get((method, path), 0) + nbytes

    def count(self, method: str, path: str) -> None:
        with self.lock:
            self.requests[(method, path)] = self.requests.get((method, path), 0) + 1

    def bytes(self, method: str, contains: str) -> int:
        with self.lock:
            return sum(n for (m, p), n in self.received.items() if m == method and contains in p)

    def calls(self, method: str, contains: str) -> int:
        with self.lock:
            return sum(n for (m, p), n in self.requests.items() if m == method and contains in p)

    def reset(self) -> None:
        with self.lock:
            self.received.clear()
            self.requests.clear()
            self.ranges.clear()


class Counting:
    """ASGI wrapper: counts what arrives, and optionally sleeps per body message of an upload."""

    def __init__(self, app: Any, traffic: Traffic) -> None:
        self.app, self.traffic = app, traffic

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        self.traffic.count(method, path)
        if method == "GET":
            headers = dict(scope["headers"])
            with self.traffic.lock:
                self.traffic.ranges.append((path, headers.get(b"range", b"").decode()))

        async def counting_receive() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.request":
                self.traffic.add(method, path, len(message.get("body", b"")))
                if self.traffic.delay and method in ("PATCH", "POST"):
                    await asyncio.sleep(self.traffic.delay)
            return message

        async def slow_send(message: dict[str, Any]) -> None:
            await send(message)
            if self.traffic.send_delay and message["type"] == "http.response.body" and method == "GET":
                await asyncio.sleep(self.traffic.send_delay)

        await self.app(scope, counting_receive, slow_send)


class Service:
    """The API on a fixed loopback port, which can be stopped and started again (a restart)."""

    def __init__(self, ctx: Context, traffic: Traffic) -> None:
        self.ctx, self.traffic = ctx, traffic
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: Any = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        import uvicorn

        app = Counting(create_app(self.ctx, start_worker=False), self.traffic)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)

    def stop(self, force: bool = False) -> None:
        """Stop serving; ``force`` drops requests in flight too (as a crash would)."""
        if self.server is not None:
            self.server.should_exit = True
            self.server.force_exit = force
        if self.thread is not None:
            self.thread.join(timeout=15)


@dataclass
class Env:
    ctx: Context
    service: Service
    traffic: Traffic
    project: str
    staff: dict[str, str]  # environment for the facility's staff member
    member: dict[str, str]  # environment for the PI (project admin)

    def api(self, env: dict[str, str], path: str) -> Any:
        response = httpx.get(
            f"{self.service.url}/api{path}", headers={"Authorization": f"Bearer {env['LEVERE_TOKEN']}"}
        )
        response.raise_for_status()
        return response.json()


def cli_env(tmp_path: Path, url: str, token: str, who: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVERE_")}
    return env | {
        "LEVERE_URL": url,
        "LEVERE_TOKEN": token,
        "LEVERE_CLI_CONFIG": str(tmp_path / f"{who}.toml"),
        "COLUMNS": "250",
    }


def levere(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "levere.cli.main", *args],
        env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def start_levere(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "levere.cli.main", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def make_env(ctx: Context, tmp_path: Path, **form_changes: Any) -> Iterator[Env]:
    world = basic_world(ctx)
    project = provisioned_project(ctx, world, **form_changes)
    traffic = Traffic()
    service = Service(ctx, traffic)
    service.start()
    try:
        yield Env(
            ctx, service, traffic, project,
            staff=cli_env(tmp_path, service.url, token_for(ctx, world.staff), "staff"),
            member=cli_env(tmp_path, service.url, token_for(ctx, world.pi), "pi"),
        )  # fmt: skip
    finally:
        service.stop()


_BASES = bytes(b"ACGT"[i % 4] for i in range(256))


def fastq(n_bytes: int, seed: int) -> bytes:
    """FASTQ-looking records (random bases, so nothing compresses or deduplicates away)."""
    rng = random.Random(seed)
    out = bytearray()
    i = 0
    while len(out) < n_bytes:
        bases = rng.randbytes(100 * 512).translate(_BASES)
        for j in range(512):
            out += b"@read%d\n%s\n+\n%s\n" % (i, bases[j * 100 : (j + 1) * 100], b"I" * 100)
            i += 1
    return bytes(out[:n_bytes])


def make_run(folder: Path, big: dict[str, int], tiny: int = 0, checksum_file: bool = True) -> Path:
    folder.mkdir(parents=True)
    for i, (name, size) in enumerate(big.items()):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(fastq(size, i))
    if tiny:
        for i in range(tiny):
            sub = folder / "stats" / f"lane{i % 4}"
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"tile_{i:05d}.json").write_bytes(b'{"tile": %d, "q30": 0.93}\n' % i + os.urandom(i % 64))
    if checksum_file:
        names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        listing = subprocess.run(["md5sum", *names], cwd=folder, capture_output=True, check=True).stdout
        (folder / "md5sum.txt").write_bytes(listing)
    return folder


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def wait_for_upload(env: Env, name: str, least: int = 1, timeout: float = 60) -> dict[str, Any]:
    """The first unfinished upload of delivery ``name`` that holds ``least`` bytes or more, not all."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            delivery = env.api(env.staff, f"/projects/{env.project}/deliveries/{name}")
        except httpx.HTTPStatusError:
            delivery = {}
        for upload in delivery.get("uploads") or []:
            if least <= upload["offset"] < upload["length"]:
                return upload  # type: ignore[no-any-return]
        time.sleep(0.02)
    raise AssertionError(f"no upload of {name} got under way")


def wait_for_batches(env: Env, name: str, timeout: float = 60) -> None:
    """Until the service is done with every batch of delivery ``name`` (a killed client's batch
    goes on until the service has stored and recorded what reached it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with env.ctx.tx() as session:
            busy = session.execute(
                select(func.count(Upload.id))
                .join(Delivery, Delivery.id == Upload.delivery_id)
                .where(Delivery.name == name, Upload.kind == "batch", Upload.state == UploadState.ACTIVE)
            ).scalar_one()
        if not busy:
            return
        time.sleep(0.02)
    raise AssertionError(f"a batch of {name} is still being received")


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


def serve_main(database_url: str, data_dir: str, port: str, delay: str) -> None:
    """The API in a process of its own (``python -c``), so that a test can SIGKILL it."""
    import uvicorn

    from levere.config import Settings
    from levere.jobs.queue import build_queue

    settings = Settings(
        mode="development", data_dir=Path(data_dir), database_url=database_url, queue_url="memory"
    )
    ctx = Context.build(settings)
    build_queue(ctx, immediate=True)
    app = Counting(create_app(ctx, start_worker=False), Traffic(delay=float(delay)))
    uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning")


def start_server_process(ctx: Context, port: int, delay: float) -> subprocess.Popen[bytes]:
    code = "import sys; from tests.cli_live import serve_main; serve_main(*sys.argv[1:])"
    args = [ctx.settings.resolved_database_url, str(ctx.settings.data_dir), str(port), str(delay)]
    proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=Path(__file__).parent.parent)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health").status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the server process did not start")


def audit_cli(
    live: LiveServer, token: str, tmp: Any, *args: str, columns: int = 60
) -> subprocess.CompletedProcess[str]:
    """``levere audit ARGS...`` in a real process, against ``live``."""
    env = os.environ | {
        "LEVERE_URL": live.url,
        "LEVERE_TOKEN": token,
        "LEVERE_CLI_CONFIG": str(tmp / "cli.toml"),
        "COLUMNS": str(columns),
    }
    return subprocess.run(
        [sys.executable, "-m", "levere.cli.main", "audit", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVERE_")}
    env["COLUMNS"] = "200"  # tables wide enough to read; messages are one line whatever the width
    return env


@dataclass
class Cli:
    """Runs ``levere`` as each person, each with their own saved sign-in, and keeps every output."""

    url: str
    home: Path
    outputs: list[tuple[list[str], str]] = field(default_factory=list)

    def config(self, who: str) -> Path:
        return self.home / f"{who}.toml"

    def run(
        self, who: str, *args: str, password: str | None = None, env: dict[str, str] | None = None
    ) -> Any:
        full = _base_env() | {"LEVERE_URL": self.url, "LEVERE_CLI_CONFIG": str(self.config(who))}
        if password is not None:
            full["LEVERE_PASSWORD"] = password
        full |= env or {}
        done = subprocess.run(
            [sys.executable, "-m", "levere.cli.main", *args],
            env=full,
            stdin=subprocess.DEVNULL,  # no terminal: nothing may prompt
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        self.outputs.append((list(args), done.stdout + done.stderr))
        assert "Traceback" not in done.stdout + done.stderr, done.stderr
        return done

    def ok(self, who: str, *args: str, **kwargs: Any) -> str:
        done = self.run(who, *args, **kwargs)
        assert done.returncode == 0, f"levere {' '.join(args)}: {done.stderr}"
        return str(done.stdout)

    def json(self, who: str, *args: str, **kwargs: Any) -> Any:
        return json.loads(self.ok(who, "--json", *args, **kwargs))

    def fails(self, who: str, *args: str, **kwargs: Any) -> str:
        """The command fails with a non-zero code and exactly one line on stderr; returns that line."""
        done = self.run(who, *args, **kwargs)
        assert done.returncode != 0, f"levere {' '.join(args)} should have failed: {done.stdout}"
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        return str(lines[0])
