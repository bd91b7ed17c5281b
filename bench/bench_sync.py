"""Sync to long-term storage: levere against `rclone copy --checksum` and `cp -r` on the same data.

Scenarios (each in interleaved rounds, levere first, page cache dropped before every run when root):
  * one 4 GiB file, area -> long-term, both local folders on the same disk;
  * 20,000 files of 4 KiB, the same;
  * the same two to S3 (a Ceph radosgw on loopback, started here): levere vs `rclone copy --checksum`.

What levere does in the timed part is what a worker does for `levere sync`: claim the files (leases,
quota reserved), copy each one with MD5 and SHA-256 computed in the same pass, compare them with the
manifest before publishing, publish write-once, make the batch durable (syncfs) and record it
(replicas "present", quota settled). The job runs in this process, as the embedded worker would run
it, so queue pick-up latency (up to a second) is not timed; an untimed first job starts the copy
processes, as a worker that has run a job before has them. rclone and cp are timed as plain
commands, without a trailing `sync`, although levere's time includes making its copies durable.

Results are printed per round and as medians; docs/benchmarks.md records them.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import GiB, drop_caches, scratch

ROOT = Path(__file__).resolve().parent.parent
KiB = 1024
BLOCK = 16 * 1024 * 1024
# an rclone run to the loopback radosgw takes 30-90 s; once (2026-12-03) one stopped moving bytes
# and waited for good, so a run there gets ten minutes, and a round it overruns is left out
S3_LIMIT = 600.0


@dataclass
class Series:
    """Throughput per round for each tool (higher is better)."""

    unit: str
    runs: dict[str, list[float]] = field(default_factory=dict)
    left_out: int = 0  # rounds in which a run stalled

    def add(self, tool: str, value: float) -> None:
        self.runs.setdefault(tool, []).append(value)

    def median(self, tool: str) -> float:
        return statistics.median(self.runs[tool])

    def ratio(self, tool: str, baseline: str) -> float:
        """Median of the per-round ratios (rounds are interleaved, so each ratio compares like with like)."""
        return statistics.median(a / b for a, b in zip(self.runs[tool], self.runs[baseline], strict=True))


class Levere:
    """A levere data folder with one project and its deliveries, synced in this process."""

    def __init__(self, data_dir: Path) -> None:
        from levere.config import get_settings
        from levere.context import Context
        from levere.db.migrate import upgrade
        from levere.domain.applications import ApplicationForm
        from levere.domain.roles import UserKind
        from levere.services import accounts, applications, projects

        self.data_dir = data_dir
        self.settings = get_settings(data_dir=data_dir, queue_url="memory")
        data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(self.settings.resolved_database_url)
        self.ctx = Context.build(self.settings)  # no job queue: jobs run in this process
        with self.ctx.tx() as session:
            self.helpdesk = accounts.create_user(
                session, None, "helpdesk@bench.invalid", kind=UserKind.HELPDESK
            )
            facility = accounts.create_facility(
                session, self.helpdesk, "bench", "Bench", "bench@bench.invalid"
            )
            self.staff = accounts.create_user(
                session, None, "staff@bench.invalid", kind=UserKind.FACILITY, facility=facility
            )
            pi = accounts.create_user(session, None, "pi@bench.invalid")
        form = ApplicationForm(
            title="Benchmark", pi_email=pi.email, data_ownership="bench", funding_source="bench",
            description="benchmark", facility="bench", quota_area_bytes=64 * 1024 * GiB,
            quota_longterm_bytes=64 * 1024 * GiB,
        )  # fmt: skip
        application = applications.create(self.ctx, self.staff, form)
        applications.submit(self.ctx, pi, str(application.number))
        _, project = applications.approve(self.ctx, self.helpdesk, str(application.number))
        self.project = project.identifier
        projects.update_settings(self.ctx, self.helpdesk, self.project, sync_mode="manual")

    def area_folder(self, delivery: str) -> Path:
        return self.data_dir / "storage" / "area" / self.project / delivery

    def deliver(self, delivery: str, files: list[tuple[str, int]]) -> None:
        """Write the files into the area (incompressible bytes), record and seal the delivery."""
        from levere.domain.tiers import Tier
        from levere.services import deliveries, projects, quotas, sealing

        deliveries.open_delivery(self.ctx, self.staff, self.project, delivery)
        area = self.ctx.backend(Tier.AREA)
        block = bytearray(os.urandom(BLOCK))
        new = []
        for n, (path, size) in enumerate(files):
            key = deliveries.area_key(self.project, delivery, path)
            md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
            with area.open_writer(key, size_hint=size, durable=False) as writer:
                written = 0
                while written < size:
                    block[:16] = (n * 1_000_003 + written).to_bytes(16, "little")
                    chunk = bytes(memoryview(block)[: min(BLOCK, size - written)])
                    md5.update(chunk)
                    sha.update(chunk)
                    writer.write(chunk)
                    written += len(chunk)
                writer.commit()
            new.append(deliveries.NewFile(path, size, md5.hexdigest(), sha.hexdigest(), key))
        area.flush()
        with self.ctx.tx() as session:
            project = projects.get_project(session, self.project)
            total = sum(size for _, size in files)
            quotas.reserve(session, project.id, "area", total)
            quotas.settle(session, project.id, "area", total)
            deliveries.record_files(
                session, deliveries.get_delivery(session, project, delivery), area.backend_id, new
            )
        sealing.seal(self.ctx, self.staff, self.project, delivery)

    def reset(self, delivery: str, keep: bool = False) -> None:
        """Forget the long-term copies of ``delivery`` so that the next sync copies everything
        again; with ``keep`` their folder is moved aside rather than removed (see
        ``harness.settle_disk``), and goes with the scratch folder."""
        from sqlalchemy import update

        from levere.db.models import Delivery, Quota, Replica, StoredFile
        from levere.services import projects

        with self.ctx.tx() as session:
            project = projects.get_project(session, self.project)
            files = session.query(StoredFile.id).join(Delivery).filter(Delivery.name == delivery).subquery()
            session.execute(
                update(Replica)
                .where(Replica.tier == "longterm", Replica.file_id.in_(files.select()))
                .values(
                    state="pending", attempts=0, lease_owner=None, lease_expires_at=None, verified_at=None
                ),
                execution_options={"synchronize_session": False},
            )
            session.execute(
                update(Quota)
                .where(Quota.project_id == project.id, Quota.tier == "longterm")
                .values(used_bytes=0, reserved_bytes=0)
            )
        copies = self.data_dir / "storage" / "longterm" / self.project
        if keep and copies.exists():
            copies.rename(self.data_dir / f"longterm-{self.project}-{uuid.uuid4().hex}")
        else:
            shutil.rmtree(copies, ignore_errors=True)

    def sync(self, delivery: str, ctx: object | None = None) -> float:
        from levere.services import sync

        start = time.perf_counter()
        job = sync.request_sync(ctx or self.ctx, self.helpdesk, self.project, delivery)  # type: ignore[arg-type]
        seconds = time.perf_counter() - start
        with self.ctx.tx() as session:
            from levere.db.models import JobRun

            run = session.get(JobRun, job.id)
            assert run is not None
            if run.state != "done" or run.files_done != run.files_total:
                raise RuntimeError(f"levere sync did not finish: {run.state} {run.error}")
        return seconds


class Stalled(Exception):
    """A run that did not finish within its time limit: its round is left out, and said so."""


def timed(cmd: list[str], env: dict[str, str] | None = None, limit: float | None = None) -> float:
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=limit)
    except subprocess.TimeoutExpired:
        raise Stalled(
            f"`{' '.join(cmd[:3])} ...` did not finish within {limit:.0f} s and was stopped"
        ) from None
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr[-2000:]}")
    return seconds


def rclone_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    # AWS_CA_BUNDLE (set on some machines for HTTPS proxies) makes rclone's S3 client refuse to
    # start on a plain-HTTP endpoint; levere's boto3 ignores it for http:// URLs
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RCLONE_", "AWS_"))}
    return env | {"RCLONE_CONFIG": os.devnull} | (extra or {})


def tree_bytes(folder: Path) -> tuple[int, int]:
    count = size = 0
    for entry in folder.rglob("*"):
        if entry.is_file():
            count += 1
            size += entry.stat().st_size
    return count, size


Tool = Callable[[int], float]


def run_rounds(
    title: str,
    rounds: int,
    tools: dict[str, Tool],
    amount: float,
    unit: str,
    cold: bool,
    prepare: dict[str, Callable[[int], None]] | None = None,
) -> Series:
    """Each round runs every tool once, in order; ``prepare`` runs before the page cache is
    dropped (drop_caches syncs first, so a tool never pays for the clean-up before it)."""
    series = Series(unit)
    print(f"== {title}", flush=True)
    for r in range(rounds):
        line, values = [], {}
        try:
            for name, run in tools.items():
                if prepare and name in prepare:
                    prepare[name](r)
                if cold:
                    drop_caches()
                else:
                    os.sync()
                seconds = run(r)
                values[name] = amount / seconds
                line.append(f"{name} {amount / seconds:,.0f} {unit} ({seconds:.2f} s)")
        except Stalled as stalled:
            # a round counts whole or not at all, so that every ratio compares like with like
            print(
                f"  round {r + 1}: left out: {stalled} ({', '.join(line) or 'no run finished'})", flush=True
            )
            series.left_out += 1
            continue
        for name, value in values.items():
            series.add(name, value)
        print(f"  round {r + 1}: " + ", ".join(line), flush=True)
    return series


def verdict(title: str, series: Series, goal: float, baseline: str = "rclone") -> bool:
    if not series.runs:
        print(f"{title}: no round finished: NO FIGURE", flush=True)
        return False
    ratio = series.ratio("levere", baseline)
    medians = ", ".join(f"{t} {series.median(t):,.0f}" for t in series.runs)
    ok = ratio >= goal
    extra = ""
    if "cp" in series.runs:
        extra = f"; levere/cp {series.ratio('levere', 'cp'):.2f}"
    if series.left_out:
        extra += f"; {series.left_out} round(s) left out, stalled"
    print(
        f"{title}: medians {medians} {series.unit}; levere/{baseline} median ratio {ratio:.2f} "
        f"(goal >= {goal}) {'OK' if ok else 'BELOW GOAL'}{extra}",
        flush=True,
    )
    return ok


def make_data(lev: Levere, size: int, count: int) -> None:
    """The deliveries every scenario syncs: BIG (one file) and SMALL (many), made once."""
    if size:
        lev.deliver("BIG", [("big.bin", size)])
    if count:
        lev.deliver("SMALL", [(f"d{i // 1000:02d}/f{i:05d}.dat", 4 * KiB) for i in range(count)])
        # a worker that has run a job before has its copy processes started: so does this one
        lev.deliver("WARMUP", [(f"w{i:04d}.dat", 4 * KiB) for i in range(1024)])
        lev.sync("WARMUP")


def local_scenarios(work: Path, lev: Levere, size: int, count: int, rounds: int, cold: bool) -> bool:
    ok = True
    if size:
        title = f"one {size / GiB:g} GiB file, local -> local"
        ok &= _local(work, lev, "BIG", title, size / 1e6, "MB/s", 0.9, rounds, cold)
    if count:
        title = f"{count:,} files of 4 KiB, local -> local"
        ok &= _local(work, lev, "SMALL", title, count, "files/s", 1.0, rounds, cold)
    return ok


def _local(
    work: Path,
    lev: Levere,
    delivery: str,
    title: str,
    amount: float,
    unit: str,
    goal: float,
    rounds: int,
    cold: bool,
) -> bool:
    src = lev.area_folder(delivery)
    count, nbytes = tree_bytes(src)
    print(f"   source: {src} ({count} files, {nbytes:,} bytes)", flush=True)
    # many files are kept until the end rather than removed after each run, so that no tool
    # creates files in the minutes after tens of thousands were removed (harness.settle_disk);
    # big ones are few, and removing them costs nothing later
    keep = count > 1000

    def levere(_r: int) -> float:
        return lev.sync(delivery)

    def rclone(r: int) -> float:
        dst = work / f"rclone-{delivery}-{r}"
        try:
            return timed(["rclone", "copy", "--checksum", str(src), str(dst)], rclone_env())
        finally:
            if not keep:
                shutil.rmtree(dst, ignore_errors=True)

    def cp(r: int) -> float:
        dst = work / f"cp-{delivery}-{r}"
        try:
            return timed(["cp", "-r", str(src), str(dst)])
        finally:
            if not keep:
                shutil.rmtree(dst, ignore_errors=True)

    series = run_rounds(
        title, rounds, {"levere": levere, "rclone": rclone, "cp": cp}, amount, unit, cold,
        prepare={"levere": lambda _r: lev.reset(delivery, keep)},
    )  # fmt: skip
    lev.reset(delivery, keep)
    return verdict(title, series, goal)


# --- S3 -------------------------------------------------------------------------------------------


def free_block(start: int, stop: int, width: int = 40) -> int:
    """A port with ``width`` free ports above it (radosgw's monitor and OSD take the next ones)."""
    for base in range(start, stop, 100):
        if all(_free(p) for p in range(base, base + width)):
            return base
    raise RuntimeError(f"no free block of {width} ports in {start}-{stop}")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def s3_scenarios(work: Path, lev: Levere, size: int, count: int, rounds: int, cold: bool) -> bool:
    from levere.config import TierSettings
    from levere.context import Context
    from levere.storage import S3Backend, S3Spec

    server = work / "s3"
    port = free_block(47700, 48900)
    # the server keeps objects in memory: room for the large file and some to spare
    memory = {"LEVERE_S3_MEMSTORE_BYTES": str(max(size, 64 * 1024 * 1024) + 2 * GiB)}
    subprocess.run(
        [str(ROOT / "scripts" / "s3-server.sh"), "start", str(server), str(port)],
        check=True,
        env=os.environ | memory,
    )
    try:
        env = dict(
            line.removeprefix("export ").split("=", 1)
            for line in (server / "env").read_text().splitlines()
            if line.startswith("export ")
        )
        endpoint = env["LEVERE_TEST_S3_ENDPOINT"]
        access, secret = env["LEVERE_TEST_S3_ACCESS_KEY"], env["LEVERE_TEST_S3_SECRET_KEY"]
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        S3Backend(endpoint, bucket, access, secret).ensure_bucket()
        remote = rclone_env(
            {
                "RCLONE_CONFIG_BENCHS3_TYPE": "s3",
                "RCLONE_CONFIG_BENCHS3_PROVIDER": "Ceph",
                "RCLONE_CONFIG_BENCHS3_ENDPOINT": endpoint,
                "RCLONE_CONFIG_BENCHS3_ACCESS_KEY_ID": access,
                "RCLONE_CONFIG_BENCHS3_SECRET_ACCESS_KEY": secret,
            }
        )

        def ctx_for(prefix: str) -> Context:
            # write_once = false: each round's objects are purged to free the in-memory store,
            # which a retention would forbid
            spec = S3Spec(
                type="s3", backend_id="longterm", bucket=bucket, prefix=prefix, endpoint_url=endpoint,
                access_key=access, secret_key=secret, write_once=False,  # type: ignore[arg-type]
            )  # fmt: skip
            return Context.build(lev.settings.model_copy(update={"tiers": TierSettings(longterm=spec)}))

        def purge(path: str) -> None:
            """Delete a run's objects and have radosgw free their space in the (in-memory) store now."""
            subprocess.run(
                ["rclone", "purge", f"benchs3:{bucket}/{path}"],
                env=remote, capture_output=True, check=True, timeout=S3_LIMIT,
            )  # fmt: skip
            subprocess.run(
                ["radosgw-admin", "gc", "process", "--include-all"],
                env=os.environ | {"CEPH_CONF": str(server / "ceph.conf")}, capture_output=True, check=True,
                timeout=S3_LIMIT,
            )  # fmt: skip

        ok = True
        for delivery, title, amount, unit, goal, wanted in (
            ("BIG", f"one {size / GiB:g} GiB file, local -> S3", size / 1e6, "MB/s", 0.9, size),
            ("SMALL", f"{count:,} files of 4 KiB, local -> S3", count, "files/s", 1.0, count),
        ):
            if not wanted:
                continue
            src = lev.area_folder(delivery)

            def levere(r: int, delivery: str = delivery) -> float:
                ctx = ctx_for(f"levere-{delivery}-{r}/")
                try:
                    return lev.sync(delivery, ctx)
                finally:
                    ctx.close()
                    purge(f"levere-{delivery}-{r}")

            def rclone(r: int, src: Path = src, delivery: str = delivery) -> float:
                try:
                    return timed(
                        ["rclone", "copy", "--checksum", str(src), f"benchs3:{bucket}/rclone-{delivery}-{r}"],
                        remote,
                        limit=S3_LIMIT,
                    )
                finally:
                    purge(f"rclone-{delivery}-{r}")

            series = run_rounds(
                title, rounds, {"levere": levere, "rclone": rclone}, amount, unit, cold,
                prepare={"levere": lambda _r, delivery=delivery: lev.reset(delivery)},  # type: ignore[misc]
            )  # fmt: skip
            lev.reset(delivery)
            ok &= verdict(title, series, goal)
        return ok
    finally:
        subprocess.run([str(ROOT / "scripts" / "s3-server.sh"), "stop", str(server)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-gib", type=float, default=4, help="size of the large file (0: skip)")
    parser.add_argument("--files", type=int, default=20_000, help="number of 4 KiB files (0: skip)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-s3", action="store_true", help="skip the S3 scenarios")
    parser.add_argument("--no-local", action="store_true", help="skip the local scenarios")
    parser.add_argument("--warm", action="store_true", help="do not drop the page cache between runs")
    args = parser.parse_args()
    if shutil.which("rclone") is None:
        sys.exit("rclone is not installed: scripts/install-test-deps.sh")
    cold = not args.warm
    if cold and not drop_caches():
        print("note: not root, so the page cache is not dropped between runs (warm-cache figures)")
        cold = False
    size = int(args.size_gib * GiB)
    ok = True
    with scratch("sync") as work:
        lev = Levere(work / "levere")
        print(f"levere sync threads: {lev.settings.sync.threads}; data in {work}", flush=True)
        make_data(lev, size, args.files)
        if not args.no_local:
            ok &= local_scenarios(work, lev, size, args.files, args.rounds, cold)
        if not args.no_s3:
            if shutil.which("radosgw") is None:
                print("S3 scenarios skipped: Ceph radosgw is not installed (scripts/install-test-deps.sh)")
            else:
                ok &= s3_scenarios(work, lev, size, args.files, args.rounds, cold)
        lev.ctx.close()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
