"""Secure-zone benchmarks: an encrypting upload against nginx, and release against the number of files.

    .venv/bin/python bench/bench_zone.py [--size-gib 4] [--rounds 3] [--release-mib 100]

1. One large file in plaintext through `levere deliver --disk` into a shared disk (tus; levere
   encrypts it with Crypt4GH while it streams, computing the plaintext's MD5 and SHA-256 in the same
   pass) against `curl -T` to nginx's WebDAV PUT on loopback writing to the same disk. Goal: at
   least 0.6x nginx's throughput (the median of the per-round ratios). Each round also delivers the
   same file into a project area (no encryption), and the service's CPU per GiB is printed for
   both, so that what encryption costs shows apart from the baseline's speed. Each round also
   times the bare work the goal asks for, alone on both cores: the file read from the page cache,
   its MD5 on one thread, its SHA-256 and its encryption on the other, nothing sent or written
   (:func:`bare_work`). No upload can be faster than that; its ratio to nginx in the same round
   shows how far this machine's cores let the goal be approached.
2. Release of a delivery of 1 file of 100 MB, of 100 files of 1 MB and of 100 files of 100 MB
   (10 GB), each timed alone on the same disk: release moves headers and never touches bodies, so
   its time must follow the number of files, not bytes. Goals: 100 files of 100 MB release in under
   1 s, and in less than twice the time of 100 files of 1 MB.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import statistics
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_deliver import Nginx
from bench.harness import (
    LEVERE,
    GiB,
    MiB,
    Service,
    cpu_seconds,
    interleave,
    levere_service,
    make_file,
    report,
    run_timed,
    scratch,
    settle_disk,
)

USERS, FACILITY = "p1234", "p11"


def master_key(folder: Path) -> Path:
    from levere.crypt4gh import MasterKeys

    path = folder / "master.keys"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(MasterKeys.new_line("bench"))
    path.chmod(0o600)
    return path


def zone(service: Service) -> tuple[str, str]:
    """A sensitive project with its users' secure project, the facility's, and a 1 TiB disk; the
    staff token is marked as having passed a second factor, as a sign-in with TOTP issues it."""
    from sqlalchemy import select, update

    from levere.config import get_settings
    from levere.context import Context
    from levere.db.models import ApiToken, User, utcnow
    from levere.domain.applications import ApplicationForm
    from levere.services import applications, secure, secure_disks

    ctx = Context.build(get_settings(data_dir=service.data_dir))
    try:
        with ctx.tx() as session:
            people = {u.email: u for u in session.execute(select(User)).scalars()}
            session.execute(update(ApiToken).values(second_factor=True))
        staff, pi, helpdesk = (people[f"{who}@bench.invalid"] for who in ("staff", "pi", "helpdesk"))
        form = ApplicationForm(
            title="Benchmark, sensitive", pi_email=pi.email, data_ownership="bench", funding_source="bench",
            description="benchmark", facility="bench", quota_area_bytes=GiB, quota_longterm_bytes=1024 * GiB,
            sensitive=True, secure_project_id=USERS,
        )  # fmt: skip
        application = applications.create(ctx, staff, form)
        applications.submit(ctx, pi, str(application.number))
        _, project = applications.approve(ctx, helpdesk, str(application.number))
        secure.register(ctx, helpdesk, FACILITY, facility="bench")
        disk = secure_disks.create(
            ctx, helpdesk, facility_project=FACILITY, users_project=USERS,
            ends_at=utcnow() + timedelta(days=30), quota_bytes=1024 * GiB,
        ).name  # fmt: skip
        return project.identifier, disk
    finally:
        ctx.close()


def bare_work(path: Path) -> float:
    """The plaintext's MD5, its SHA-256 and its Crypt4GH encryption, with nothing sent or written:
    chunks of 16 MiB read from the page cache, MD5 on a thread of its own (it is serial, and
    releases the GIL), SHA-256 and the segments' encryption (levere's own, into one buffer) on the
    calling thread; MiB/s."""
    from levere.crypt4gh.header import DataKey
    from levere.crypt4gh.segment_worker import CHUNK, CIPHER_CHUNK, encrypt_segments

    step = 16 * MiB  # a whole number of chunks of segments
    cipher = DataKey.generate().cipher()
    out = memoryview(bytearray(CIPHER_CHUNK))
    buffers = [memoryview(bytearray(step)) for _ in range(2)]  # one hashed by MD5, one read into
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb", buffering=0) as source, ThreadPoolExecutor(max_workers=1) as side:
        started = time.perf_counter()
        pending = None
        for turn in itertools.count():
            buffer = buffers[turn % 2]
            got = source.readinto(buffer)
            if not got:
                break
            if pending is not None:
                pending.result()
            chunk = buffer[:got]
            pending = side.submit(md5.update, chunk)
            sha256.update(chunk)
            for at in range(0, got, CHUNK):
                piece = chunk[at : at + CHUNK]
                encrypt_segments(cipher, piece, len(piece), out)
        if pending is not None:
            pending.result()
        seconds = time.perf_counter() - started
    return path.stat().st_size / MiB / seconds


def upload(work: Path, service: Service, project: str, disk: str, size: int, rounds: int) -> bool:
    run = work / "run-zone"
    run.mkdir()
    md5 = make_file(run / "sample_R1.fastq.gz", size)
    (run / "md5sum.txt").write_text(f"{md5}  sample_R1.fastq.gz\n")
    nginx = Nginx(work / "nginx")
    env = service.cli_env(service.staff_token)
    # the same file into a non-sensitive project's area in each round, for what encryption costs
    plain: list[float] = []
    bare: list[float] = []
    cpu: dict[str, list[float]] = {"area": [], "disk": []}

    def deliver_timed(i: int, where: str, *target: str) -> float:
        settle_disk()
        before = cpu_seconds(service.proc.pid, reaped=True)
        t = run_timed([LEVERE, "deliver", *target, str(run), "--name", f"{where}-{i}"], env=env)
        cpu[where].append((cpu_seconds(service.proc.pid, reaped=True) - before) / (size / GiB))
        return size / MiB / t.seconds

    try:

        def curl(i: int) -> float:
            return nginx.put(run / "sample_R1.fastq.gz", i)

        def deliver(i: int) -> float:
            plain.append(deliver_timed(i, "area", service.project()))
            print(f"  round {i + 1}: levere deliver to a project area {plain[-1]:,.1f} MiB/s", flush=True)
            disk_speed = deliver_timed(i, "disk", project, "--disk", disk)
            bare.append(bare_work(run / "sample_R1.fastq.gz"))
            print(
                f"  round {i + 1}: MD5, SHA-256 and encryption alone (nothing sent) {bare[-1]:,.1f} MiB/s",
                flush=True,
            )
            return disk_speed

        print(
            f"One {size / GiB:.0f} GiB plaintext file into a shared disk: curl -T to nginx vs levere deliver --disk"
        )
        rounds_ = interleave(rounds, curl, deliver, "MiB/s")
    finally:
        nginx.stop()
    print(
        f"  the same file into a project area (no encryption): median {statistics.median(plain):,.1f} MiB/s; "
        f"the disk's speed is {statistics.median([b / a for a, b in zip(plain, rounds_.levere, strict=True)]):.2f}x it; "
        f"the server's CPU per GiB: area {statistics.median(cpu['area']):.2f} s, "
        f"disk {statistics.median(cpu['disk']):.2f} s (encrypting helpers included)",
        flush=True,
    )
    print(
        f"  MD5, SHA-256 and encryption alone on both cores: median {statistics.median(bare):,.1f} MiB/s, "
        f"{statistics.median([b / a for a, b in zip(rounds_.baseline, bare, strict=True)]):.2f}x nginx "
        f"(the most any upload doing that work could reach here); the upload is "
        f"{statistics.median([u / b for u, b in zip(rounds_.levere, bare, strict=True)]):.2f}x it",
        flush=True,
    )
    return report("encrypting upload", "nginx PUT", rounds_, 0.6)


def _pieces(size: int) -> Iterator[bytes]:
    block = os.urandom(MiB)
    for offset in range(0, size, MiB):
        yield block[: min(MiB, size - offset)]


def release(service: Service, project: str, disk: str, file_mib: int) -> bool:
    """Three deliveries stored on the disk and sealed, then each released on its own, timed."""
    from sqlalchemy import select

    from levere.config import get_settings
    from levere.context import Context
    from levere.db.models import Delivery, Project, SharedDisk, User, utcnow
    from levere.domain.deliveries import DeliveryState
    from levere.services import projects, zone_release
    from levere.services.zone_store import store_zone_file

    ctx = Context.build(get_settings(data_dir=service.data_dir))
    one, many, big_name = f"1x{file_mib}MB", "100x1MB", f"100x{file_mib}MB"
    shapes = {one: (1, file_mib), many: (100, 1), big_name: (100, file_mib)}
    try:
        with ctx.tx() as session:
            staff = session.execute(select(User).where(User.email == "staff@bench.invalid")).scalar_one()
            disk_id = session.execute(select(SharedDisk.id).where(SharedDisk.name == disk)).scalar_one()
        for name, (count, mib) in shapes.items():
            started = time.monotonic()
            with ctx.tx() as session:
                research: Project = projects.get_project(session, project)
                delivery = Delivery(project_id=research.id, facility_id=staff.facility_id, name=name,
                                    state=DeliveryState.OPEN.value, shared_disk_id=disk_id)  # fmt: skip
                session.add(delivery)
                session.flush()
                for n in range(count):
                    store_zone_file(
                        ctx, session, delivery, f"lane1/sample_{n:03d}.fastq.gz", _pieces(mib * MiB)
                    )
                delivery.state, delivery.sealed_at = DeliveryState.SEALED.value, utcnow()
            print(
                f"  stored {name} ({count * mib:,} MiB of bodies) in {time.monotonic() - started:.1f} s",
                flush=True,
            )
        settle_disk()
        timings: dict[str, float] = {}
        for name in shapes:
            # a delivery is released once, so each shape is timed once
            started = time.perf_counter()
            moved = zone_release.release(ctx, staff, disk, name)
            timings[name] = time.perf_counter() - started
            print(f"  release {name}: {timings[name] * 1000:,.0f} ms ({moved.files} files)", flush=True)
    finally:
        ctx.close()
    big, small = timings[big_name], timings[many]
    ok = big < 1.0 and big < 2 * small
    print(
        f"release: 1 file {timings[one] * 1000:,.0f} ms; 100 files of 1 MB {small * 1000:,.0f} ms; "
        f"100 files of {file_mib} MB {big * 1000:,.0f} ms ({file_mib}x the bytes: {big / small:.2f}x the time); "
        f"goal: under 1 s and under 2x {'OK' if ok else 'BELOW GOAL'}",
        flush=True,
    )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-gib", type=float, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--release-mib", type=int, default=100, help="size of each file of the big release")
    parser.add_argument("--only", choices=("upload", "release"), help="run one of the two benchmarks")
    args = parser.parse_args()
    with scratch("zone") as work:
        key = master_key(work / "keys")
        os.environ["LEVERE_SECURE__MASTER_KEY_FILE"] = str(key)  # for this process's own Context
        extra = {"LEVERE_EMBEDDED_WORKER": "false", "LEVERE_SECURE__MASTER_KEY_FILE": str(key)}
        with levere_service(work / "levere", extra) as service:
            project, disk = zone(service)
            results = []
            if args.only in (None, "upload"):
                results.append(upload(work, service, project, disk, int(args.size_gib * GiB), args.rounds))
            if args.only in (None, "release"):
                results.append(release(service, project, disk, args.release_mib))
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
