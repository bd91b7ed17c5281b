"""``levere serve`` and ``levere worker`` stop on SIGTERM and SIGINT within 10 s with exit code 0, as
systemd and Kubernetes expect: requests in flight finish or stay resumable, running jobs are picked
up again by the next worker, and a second ``levere serve`` on a busy port says so in one line.
Real processes throughout; on SQLite, and on PostgreSQL when LEVERE_TEST_DATABASE_URL is set."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from levere.config import Settings
from levere.context import Context
from levere.services import sync
from tests.conftest import job, wait_for
from tests.deliveries_support import (
    OCTETS,
    TUS,
    MiB,
    Server,
    _check_stored,
    _paced,
    _staged,
    crew,
    open_delivery,
    tar_of,
    tus_create,
    tus_patch,
)
from tests.processes import STOP_SECONDS, stop_gracefully
from tests.sync_support import (
    deliver,
    longterm_path,
    quota,
    random_files,
    replica_states,
    replicas,
    setup_project,
)

SIGNALS = [signal.SIGTERM, signal.SIGINT]


@pytest.fixture
def service(settings: Settings, tmp_path: Path) -> Iterator[Server]:
    """``levere serve`` as a child process; the test starts it (with or without its job worker)."""
    srv = Server(settings, tmp_path)
    yield srv
    srv.stop()


def wait_for_log(path: Path, text: str, timeout: float = 30) -> None:
    wait_for(
        lambda: path.exists() and text in path.read_text(errors="replace"), timeout, f"{text!r} in {path}"
    )


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.mark.parametrize("sig", SIGNALS, ids=["SIGTERM", "SIGINT"])
def test_serve_with_its_job_worker_stops_on_the_signal(service: Server, queue_file: Path, sig: int) -> None:
    service.start(worker=True, LEVERE_QUEUE_URL=f"sqlite:///{queue_file}")
    assert service.proc is not None
    time.sleep(1.5)  # the embedded consumer and its scheduler are running by now
    took = stop_gracefully(service.proc, sig)
    assert took < STOP_SECONDS
    assert port_is_free(service.port)
    assert "Traceback" not in service.log.read_text()


@pytest.mark.parametrize("sig", SIGNALS, ids=["SIGTERM", "SIGINT"])
def test_worker_stops_on_the_signal(
    workers: Callable[..., subprocess.Popen[str]], tmp_path: Path, sig: int
) -> None:
    proc = workers("idle")
    wait_for_log(tmp_path / "worker-idle.log", "Huey consumer started")
    time.sleep(1.5)
    took = stop_gracefully(proc, sig)
    assert took < STOP_SECONDS
    log = (tmp_path / "worker-idle.log").read_text()
    assert "levere worker stopped" in log and "Traceback" not in log


def test_a_second_serve_on_a_busy_port_says_so_in_one_line(service: Server) -> None:
    service.start()
    second = subprocess.run(
        [str(Path(sys.executable).parent / "levere"), "serve", "--port", str(service.port), "--no-worker"],
        env=service.env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert second.returncode != 0
    assert second.stderr.strip() == f"error: port {service.port} on 127.0.0.1 is already in use"
    assert "serving" not in second.stdout + second.stderr
    assert httpx.get(f"{service.url}/api/health").status_code == 200  # the first one is untouched


def accepts(url: str) -> bool:
    try:
        httpx.get(f"{url}/api/health", timeout=2)
    except httpx.TransportError:
        return False
    return True


def _patch_in_thread(
    http: httpx.Client, c: object, url: str, data: bytes, pause: float
) -> tuple[threading.Thread, list[int], list[int]]:
    """A PATCH whose body is sent 1 MiB at a time, ``pause`` seconds apart, in a thread; returns
    the thread, the offset being sent and the status it got (none if the connection dropped)."""
    sent, status = [0], []

    def stream() -> None:
        with contextlib.suppress(httpx.HTTPError):
            response = http.patch(
                url,
                content=_paced(data, MiB, pause, sent),
                headers={**c.headers(), **TUS, **OCTETS, "Upload-Offset": "0"},  # type: ignore[attr-defined]
            )
            status.append(response.status_code)

    thread = threading.Thread(target=stream)
    thread.start()
    return thread, sent, status


def test_an_upload_that_ends_within_the_grace_period_finishes(service: Server, ctx: Context) -> None:
    c = crew(ctx)
    data = os.urandom(12 * MiB + 7)
    service.start(worker=True)
    assert service.proc is not None
    with httpx.Client(base_url=service.url, timeout=60) as http:
        open_delivery(http, c)
        url = tus_create(http, c, "RUN42", "short.bin", len(data)).headers["Location"]
        thread, sent, status = _patch_in_thread(http, c, url, data, 0.2)
        wait_for(lambda: sent[0] >= 2 * MiB, 30, "the upload under way")
        started = time.monotonic()
        service.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: not accepts(service.url), 5, "new connections refused")
        assert thread.is_alive()  # while the upload still runs
        code = service.proc.wait(timeout=STOP_SECONDS)
        took = time.monotonic() - started
        thread.join(timeout=30)
    assert status == [204]  # the request in flight was let finish
    assert code == 0 and took < STOP_SECONDS


def test_an_upload_too_long_for_the_grace_period_stays_resumable(service: Server, ctx: Context) -> None:
    c = crew(ctx)
    data = os.urandom(60 * MiB + 4321)
    service.start(worker=True)
    assert service.proc is not None
    with httpx.Client(base_url=service.url, timeout=60) as http:
        open_delivery(http, c)
        url = tus_create(http, c, "RUN42", "long.bin", len(data)).headers["Location"]
        thread, sent, status = _patch_in_thread(http, c, url, data, 0.2)
        wait_for(lambda: _staged(ctx, url) >= 3 * MiB, 30, "the upload under way")
        took = stop_gracefully(service.proc)
        thread.join(timeout=30)
        assert status != [204] and sent[0] < len(data) - MiB  # it was cut off mid-body
    assert took < STOP_SECONDS
    service.start()
    with httpx.Client(base_url=service.url, timeout=60) as http:
        head = http.head(url, headers={**c.headers(), **TUS})
        assert head.status_code == 200, head.text
        offset = int(head.headers["Upload-Offset"])
        assert 3 * MiB <= offset == _staged(ctx, url) < len(data)
        done = tus_patch(http, c, url, offset, data[offset:])
        assert done.status_code == 204, done.text
        _check_stored(http, c, ctx, "long.bin", data, done)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_batch_in_flight_finishes_when_the_whole_process_group_is_signalled(
    service: Server, ctx: Context, signum: signal.Signals
) -> None:
    """A terminal's Ctrl-C reaches the whole foreground group (the publishing processes ignore it),
    and a service manager may send SIGTERM to every process of the service (they die of it and the
    batch goes on in threads): either way the batch in flight finishes."""
    c = crew(ctx)
    files = {f"small/{n:04}.txt": os.urandom(20_000) for n in range(400)}
    body = tar_of(files)
    service.start(own_group=True, LEVERE_INGEST_PROCESSES="2")
    assert service.proc is not None
    sent = [0]
    with httpx.Client(base_url=service.url, timeout=60) as http:
        open_delivery(http, c)
        answer: list[httpx.Response] = []
        thread = threading.Thread(
            target=lambda: answer.append(
                http.post(
                    f"/api/projects/{c.project}/deliveries/RUN42/batch",
                    content=_paced(body, 512 * 1024, 0.1, sent),
                    headers={**c.headers(), "Content-Type": "application/x-tar"},
                )
            )
        )
        thread.start()
        wait_for(lambda: sent[0] >= 2 * MiB, 30, "the batch under way")
        os.killpg(service.proc.pid, signum)
        took = time.monotonic()
        code = service.proc.wait(timeout=STOP_SECONDS)
        took = time.monotonic() - took
        thread.join(timeout=30)
    assert code == 0 and took < STOP_SECONDS
    assert answer and answer[0].status_code == 200, answer and answer[0].text
    result = answer[0].json()
    assert (len(result["stored"]), result["failed"]) == (len(files), [])


def test_a_sync_cut_off_mid_file_by_sigterm_is_finished_by_the_next_worker(
    ctx: Context, producer: Context, workers: Callable[..., subprocess.Popen[str]], settings: Settings
) -> None:
    """The worker abandons a copy that would outlast its grace period: the task goes back on the
    queue and its leases are released, so the next worker finishes the job at once (the lease
    would otherwise hold the file for ``lease_seconds``, 300 s by default)."""
    s = setup_project(ctx)
    big = os.urandom(24 * MiB)
    files = random_files(5, 3000) | {"run.bam": big}
    deliver(ctx, s, "RUN1", files)
    stopping = workers("stopping", bandwidth_limit=2_000_000)
    started = sync.request_sync(producer, s.world.helpdesk, s.project)
    tmp = Path(settings.data_dir) / "storage" / "longterm" / ".levere-tmp"
    wait_for(
        lambda: tmp.is_dir() and any(f.stat().st_size > 2 * MiB for f in tmp.iterdir()),
        what="the big file half copied",
    )
    took = stop_gracefully(stopping)
    assert took < STOP_SECONDS
    assert job(ctx, started.id).state == "running"
    states = replica_states(ctx, s, "longterm")
    assert [v for k, v in states.items() if k.endswith("run.bam")] == ["copying"]  # left mid-copy

    begun = time.monotonic()
    workers("next")
    done = wait_for(lambda: (r := job(ctx, started.id)).state in ("done", "failed") and r, 120, "the job")
    assert done.state == "done", done.error
    assert time.monotonic() - begun < 60  # not held up by the stopped worker's leases
    assert set(replica_states(ctx, s, "longterm").values()) == {"present"}
    stored = Path(longterm_path(ctx, f"{s.project}/RUN1/run.bam")).read_bytes()
    assert hashlib.sha256(stored).digest() == hashlib.sha256(big).digest()
    used = quota(ctx, s, "longterm")
    assert (used.used_bytes, used.reserved_bytes) == (sum(len(d) for d in files.values()), 0)


def test_a_sync_stopped_by_sigint_ends_its_batch_and_the_next_worker_does_the_rest(
    ctx: Context, producer: Context, workers: Callable[..., subprocess.Popen[str]]
) -> None:
    """Small batches end within the grace period: the worker records the batches it has, claims no
    more, and puts the job back on the queue; nothing is left leased."""
    s = setup_project(ctx)
    files = random_files(120, 20_000)
    deliver(ctx, s, "RUN1", files)
    stopping = workers("stopping", batch_files=5, bandwidth_limit=400_000)
    started = sync.request_sync(producer, s.world.helpdesk, s.project)
    wait_for(lambda: "present" in replica_states(ctx, s, "longterm").values(), what="some files copied")
    took = stop_gracefully(stopping, signal.SIGINT)
    assert took < STOP_SECONDS
    states = list(replica_states(ctx, s, "longterm").values())
    assert set(states) == {"present", "pending"}, states  # nothing abandoned mid-copy
    assert job(ctx, started.id).state == "running"

    workers("next")
    done = wait_for(lambda: (r := job(ctx, started.id)).state in ("done", "failed") and r, 120, "the job")
    assert (done.state, done.files_done, done.files_failed) == ("done", 120, 0), done.error
    assert [r.attempts for r in replicas(ctx, s, "longterm")] == [1] * 120  # no file copied twice
    used = quota(ctx, s, "longterm")
    assert (used.used_bytes, used.reserved_bytes) == (120 * 20_000, 0)
