"""What every benchmark shares: interleaved rounds, a throwaway levere service, a results table.

Disk speed on these machines varies by +-50% from run to run, so each benchmark runs its baseline (A)
and levere (B) alternately on the same data, A B A B ..., and reports the median of the per-round
ratios rather than comparing two separate averages.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

LEVERE = str(Path(sys.executable).parent / "levere")
MiB = 1024 * 1024
GiB = 1024 * MiB


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 30, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up") from None
            time.sleep(0.1)


def bench_dir(name: str) -> Path:
    """A scratch folder on the same disk as the project (not a tmpfs), removed by the caller."""
    base = Path(os.environ.get("LEVERE_BENCH_DIR", Path(__file__).resolve().parent.parent / ".bench"))
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))


def make_file(path: Path, size: int) -> str:
    """Incompressible content without spending minutes in os.urandom: one random block, varied per
    block. Returns the file's MD5, for the run folder's checksum file."""
    block = bytearray(os.urandom(16 * MiB))
    md5 = hashlib.md5(usedforsecurity=False)
    with open(path, "wb") as fh:
        written, n = 0, 0
        while written < size:
            block[:8] = n.to_bytes(8, "little")
            chunk = memoryview(block)[: min(len(block), size - written)]
            fh.write(chunk)
            md5.update(chunk)
            written += len(chunk)
            n += 1
    return md5.hexdigest()


def settle_disk() -> None:
    """Before a timed run: write back what earlier runs left dirty, so that no run pays for the
    one before it.

    What a sync cannot settle: on ext4 without a journal (these machines' disks), creating a file
    in the minutes after many were removed nearby is several times slower, as the allocator looks
    at each recently freed inode and passes it by (``perf`` shows ``recently_deleted`` taking over
    half of the creation's time). So benchmarks keep the many small files they make until the end.
    """
    os.sync()


def drop_caches() -> bool:
    """Drop the page cache if allowed (root); returns whether it happened."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


@dataclass
class Timed:
    seconds: float
    max_rss_kib: int = 0
    cpu_seconds: float = 0.0


def run_timed(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Timed:
    """Run a command; its wall time and its own peak RSS (from wait4, not the whole process tree)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}): {stderr.strip()[-2000:]}")
    return Timed(seconds, usage.ru_maxrss, usage.ru_utime + usage.ru_stime)


def peak_rss_kib(pid: int) -> int:
    """A running process's peak resident memory so far (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    """The processes started by ``pid`` that are still running."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[int]:
    """The processes started by ``pid`` and by them, that are still running."""
    return [p for child in children(pid) for p in (child, *descendants(child))]


def cpu_seconds(pid: int, reaped: bool = False) -> float:
    """User and system CPU time a running process has used (with ``reaped``, also that of its
    children that ended and were waited for)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = sum(int(f) for f in fields[11 : 15 if reaped else 13])
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class Rounds:
    """Per-round measurements of a baseline and of levere, in the same unit (higher is better)."""

    unit: str
    baseline: list[float] = field(default_factory=list)
    levere: list[float] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [b / a for a, b in zip(self.baseline, self.levere, strict=True)]

    @property
    def median_ratio(self) -> float:
        return statistics.median(self.ratios)


def interleave(
    rounds: int, baseline: Callable[[int], float], levere: Callable[[int], float], unit: str
) -> Rounds:
    result = Rounds(unit)
    for i in range(rounds):
        result.baseline.append(baseline(i))
        result.levere.append(levere(i))
        print(
            f"  round {i + 1}: baseline {result.baseline[-1]:,.1f} {unit}, levere {result.levere[-1]:,.1f} {unit}, "
            f"ratio {result.ratios[-1]:.2f}",
            flush=True,
        )
    return result


def report(title: str, baseline_name: str, rounds: Rounds, goal: float) -> bool:
    ok = rounds.median_ratio >= goal
    print(
        f"{title}: {baseline_name} median {statistics.median(rounds.baseline):,.1f} {rounds.unit}, "
        f"levere median {statistics.median(rounds.levere):,.1f} {rounds.unit}; "
        f"median ratio {rounds.median_ratio:.2f} (goal >= {goal}) {'OK' if ok else 'BELOW GOAL'}",
        flush=True,
    )
    return ok


@dataclass
class Service:
    """A `levere serve` on loopback with a facility, a staff token and a project to deliver into."""

    url: str
    data_dir: Path
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    staff_token: str
    helpdesk_token: str

    def project(self, area: int = 1024 * GiB, longterm: int = 1024 * GiB) -> str:
        """A fresh provisioned project (a new one per round keeps rounds independent)."""
        from levere.config import get_settings
        from levere.context import Context
        from levere.domain.applications import ApplicationForm
        from levere.services import applications

        ctx = Context.build(get_settings(data_dir=self.data_dir))
        try:
            from sqlalchemy import select

            from levere.db.models import User

            with ctx.tx() as session:
                staff = session.execute(select(User).where(User.email == "staff@bench.invalid")).scalar_one()
                pi = session.execute(select(User).where(User.email == "pi@bench.invalid")).scalar_one()
                helpdesk = session.execute(
                    select(User).where(User.email == "helpdesk@bench.invalid")
                ).scalar_one()
            form = ApplicationForm(
                title="Benchmark run", pi_email=pi.email, data_ownership="bench", funding_source="bench",
                description="benchmark", facility="bench", quota_area_bytes=area, quota_longterm_bytes=longterm,
            )  # fmt: skip
            application = applications.create(ctx, staff, form)
            applications.submit(ctx, pi, str(application.number))
            _, project = applications.approve(ctx, helpdesk, str(application.number))
            return project.identifier
        finally:
            ctx.close()

    def cli_env(self, token: str) -> dict[str, str]:
        return self.env | {
            "LEVERE_URL": self.url,
            "LEVERE_TOKEN": token,
            "LEVERE_CLI_CONFIG": str(self.data_dir / "cli.toml"),
        }


@contextmanager
def levere_service(data_dir: Path, extra_env: dict[str, str] | None = None) -> Iterator[Service]:
    from levere.config import get_settings
    from levere.context import Context
    from levere.db.migrate import upgrade
    from levere.domain.roles import UserKind
    from levere.services import accounts

    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVERE_")}
    env |= {"LEVERE_DATA_DIR": str(data_dir), **(extra_env or {})}
    settings = get_settings(data_dir=data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    ctx = Context.build(settings)
    with ctx.tx() as session:
        helpdesk = accounts.create_user(
            session, None, "helpdesk@bench.invalid", kind=UserKind.HELPDESK, password="bench-password-1"
        )
        facility = accounts.create_facility(
            session, helpdesk, "bench", "Bench facility", "bench@bench.invalid"
        )
        staff = accounts.create_user(
            session,
            None,
            "staff@bench.invalid",
            kind=UserKind.FACILITY,
            password="bench-password-1",
            facility=facility,
        )
        accounts.create_user(session, None, "pi@bench.invalid", password="bench-password-1")
        staff_token = accounts.issue_token(ctx, session, staff, "bench").token
        helpdesk_token = accounts.issue_token(ctx, session, helpdesk, "bench").token
    ctx.close()
    port = free_port()
    log = open(data_dir / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [LEVERE, "serve", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/api/health", proc=proc)
        yield Service(f"http://127.0.0.1:{port}", data_dir, proc, env, staff_token, helpdesk_token)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@contextmanager
def scratch(name: str) -> Iterator[Path]:
    """A scratch folder, removed at the end unless ``LEVERE_BENCH_KEEP_SCRATCH`` is set: ``make
    bench`` removes every benchmark's at once when all have run, so that no benchmark runs in the
    minutes after another removed tens of thousands of files (see :func:`settle_disk`)."""
    path = bench_dir(name)
    try:
        yield path
    finally:
        if not os.environ.get("LEVERE_BENCH_KEEP_SCRATCH"):
            shutil.rmtree(path, ignore_errors=True)


def children_max_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
