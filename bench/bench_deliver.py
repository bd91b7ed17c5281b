"""Delivery benchmarks: `levere deliver` against nginx WebDAV PUT and against rsync, on the same disk.

    .venv/bin/python bench/bench_deliver.py [--size-gib 4] [--files 20000] [--rounds 3] [--small-rounds 5]

1. One large file through `levere deliver` to a local `levere serve` (tus, MD5 + SHA-256 computed on both
   sides and compared) vs `curl -T` to nginx's WebDAV PUT on loopback writing to the same disk.
2. Many 4 KiB files through `levere deliver` vs `rsync -a` to a local folder.
3. Peak memory (RSS) of the client and of the server during the large upload.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    LEVERE,
    GiB,
    MiB,
    Service,
    children,
    cpu_seconds,
    descendants,
    free_port,
    interleave,
    levere_service,
    make_file,
    peak_rss_kib,
    report,
    run_timed,
    scratch,
    settle_disk,
    wait_http,
)

NGINX_CONF = """
daemon off;
{user}
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
load_module /usr/lib/nginx/modules/ngx_http_dav_ext_module.so;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {root}/body-temp;
    client_max_body_size 0;
    client_body_buffer_size 1m;
    sendfile on;
    server {{
        listen 127.0.0.1:{port};
        root {root}/dav;
        location / {{
            dav_methods PUT DELETE MKCOL;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
        }}
    }}
}}
"""


class Nginx:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        (root / "dav").mkdir(parents=True)
        (root / "body-temp").mkdir()
        conf = root / "nginx.conf"
        module = Path("/usr/lib/nginx/modules/ngx_http_dav_ext_module.so")
        # as root, nginx's workers would drop to an account that cannot write into the scratch folder
        user = "user root;" if os.geteuid() == 0 else ""
        text = NGINX_CONF.format(root=root, port=self.port, user=user)
        if not module.exists():
            text = text.replace(f"load_module {module};\n", "")
        conf.write_text(text)
        self.proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(root)], stderr=subprocess.PIPE)
        wait_http(f"http://127.0.0.1:{self.port}/", proc=self.proc)

    def put(self, path: Path, i: int) -> float:
        """One `curl -T` of ``path`` to this nginx, after the disk settled; MiB/s. The copy is removed."""
        settle_disk()
        t = run_timed(["curl", "-sS", "--fail", "-T", str(path), f"http://127.0.0.1:{self.port}/r{i}.bin"])
        (self.root / "dav" / f"r{i}.bin").unlink()
        return path.stat().st_size / MiB / t.seconds

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def large_file(work: Path, service: Service, size: int, rounds: int) -> bool:
    run = work / "run-large"
    run.mkdir()
    # as a sequencer's run folder has it: the service checks the MD5 against it, and the SHA-256
    # against the one the client computed, before the file is published
    md5 = make_file(run / "sample_R1.fastq.gz", size)
    (run / "md5sum.txt").write_text(f"{md5}  sample_R1.fastq.gz\n")
    nginx = Nginx(work / "nginx")
    env = service.cli_env(service.staff_token)
    client_rss: list[int] = []
    try:

        def curl(i: int) -> float:
            return nginx.put(run / "sample_R1.fastq.gz", i)

        def deliver(i: int) -> float:
            project = service.project()
            settle_disk()
            t = run_timed([LEVERE, "deliver", project, str(run), "--name", f"large-{i}"], env=env)
            client_rss.append(t.max_rss_kib)
            shutil.rmtree(service.data_dir / "storage" / "area" / project, ignore_errors=True)
            return size / MiB / t.seconds

        print(f"One {size / GiB:.0f} GiB file: curl -T to nginx WebDAV vs levere deliver (MB/s = MiB/s)")
        rounds_ = interleave(rounds, curl, deliver, "MiB/s")
    finally:
        nginx.stop()
    ok = report("large file", "nginx PUT", rounds_, 0.6)
    # the children that publish small files come from the fork server the service starts beside it
    # (its own children, with the resource tracker); the checksum file alone is written in the service
    publishing = [p for child in children(service.proc.pid) for p in descendants(child)]
    assert not publishing, "the service started children for a run of one large file"
    server_peak = peak_rss_kib(service.proc.pid) / 1024
    client_peak = max(client_rss) / 1024
    mem_ok = server_peak < 200 and client_peak < 200
    print(
        f"peak RSS during the large uploads: client {client_peak:.0f} MiB, server {server_peak:.0f} MiB "
        f"(goal < 200 MB each) {'OK' if mem_ok else 'ABOVE GOAL'}"
    )
    return ok and mem_ok


def small_files(work: Path, service: Service, count: int, rounds: int) -> bool:
    run = work / "run-small"
    for i in range(count):
        folder = run / f"lane{i % 8}"
        if i < 8:
            folder.mkdir(parents=True)
        (folder / f"read_{i:06d}.txt").write_bytes(i.to_bytes(8, "little") * 512)
    env = service.cli_env(service.staff_token)

    # Copies are kept until the end rather than removed after each round: on these machines' ext4
    # (no journal), creating files in the minutes after tens of thousands were deleted nearby is
    # several times slower (the allocator skips recently freed inodes), which would make each
    # round pay for the one before it.
    def rsync(i: int) -> float:
        settle_disk()
        t = run_timed(["rsync", "-a", f"{run}/", f"{work}/rsync-{i}/"])
        return count / t.seconds

    def deliver(i: int) -> float:
        project = service.project()
        settle_disk()
        # the service's children (which publish the files) come and go: count those of this run
        before = {p: cpu_seconds(p) for p in [service.proc.pid, *descendants(service.proc.pid)]}
        t = run_timed([LEVERE, "deliver", project, str(run), "--name", f"small-{i}"], env=env)
        helpers = descendants(service.proc.pid)
        used = {p: cpu_seconds(p) - before.get(p, 0.0) for p in [service.proc.pid, *helpers]}
        print(
            f"    levere CPU: client {t.cpu_seconds:.2f} s, service {used[service.proc.pid]:.2f} s, its "
            f"children {sum(used[c] for c in helpers):.2f} s; peak RSS: client {t.max_rss_kib / 1024:.0f} MiB, "
            f"service {peak_rss_kib(service.proc.pid) / 1024:.0f} MiB, children "
            f"{' + '.join(f'{peak_rss_kib(c) / 1024:.0f}' for c in helpers)} MiB",
            flush=True,
        )
        return count / t.seconds

    print(f"{count:,} files of 4 KiB: rsync -a to a local folder vs levere deliver (files/s)")
    return report("small files", "rsync -a", interleave(rounds, rsync, deliver, "files/s"), 0.5)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-gib", type=float, default=4)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the large-file comparison")
    # the disk's speed at creating files moves more from one run to the next than its throughput
    # does, and a small-file round costs seconds: more rounds make a steadier median
    parser.add_argument("--small-rounds", type=int, default=5, help="rounds of the small-file comparison")
    args = parser.parse_args()
    results = []
    # no embedded worker: the automatic sync to long-term would compete with the next round
    with (
        scratch("deliver") as work,
        levere_service(work / "levere", {"LEVERE_EMBEDDED_WORKER": "false"}) as service,
    ):
        results.append(large_file(work, service, int(args.size_gib * GiB), args.rounds))
        results.append(small_files(work, service, args.files, args.small_rounds))
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
