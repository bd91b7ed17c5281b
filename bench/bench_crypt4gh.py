"""Crypt4GH encryption benchmark: levere's streaming encryption (with MD5 + SHA-256 of the plaintext
in the same pass) against the stock `crypt4gh encrypt`, on the same file, in the same run.

    .venv/bin/python bench/bench_crypt4gh.py [--size-gib 4] [--rounds 3]

Both read the plaintext from a file on disk and write the Crypt4GH output to a file on the same
disk, each as a process of its own (the stock tool from its command line, levere through
`levere.crypt4gh.encrypt_stream` writing header then body). Rounds alternate the two; the figure is
plaintext MB/s, and the goal is levere at 1.5x the stock tool or better.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import GiB, interleave, make_file, report, scratch, settle_disk

CRYPT4GH = str(Path(sys.executable).parent / "crypt4gh")
CRYPT4GH_KEYGEN = str(Path(sys.executable).parent / "crypt4gh-keygen")


def levere_encrypt(plaintext: Path, output: Path, public_key: Path) -> None:
    """One encryption as levere does it (run in a child process by the benchmark)."""
    from levere.crypt4gh import PublicKey, encrypt_stream, make_header

    recipient = PublicKey.from_pem(public_key.read_text())
    with plaintext.open("rb", buffering=0) as source, output.open("wb", buffering=0) as sink:
        result = encrypt_stream(source, sink)
    header = make_header(result.data_key, recipient)
    # the header goes apart from the body in levere (to the database); written beside it here so the
    # output is the same kind of file the stock tool makes
    output.with_suffix(".header").write_bytes(header)
    print(result.md5, result.sha256)


@dataclass
class Run:
    seconds: float
    cpu_seconds: float
    printed: str


def timed(cmd: list[str], stdin: Path | None = None, stdout: Path | None = None) -> Run:
    """Run ``cmd`` with a file as standard input and output if given: its wall time, its CPU time
    (user + system, all its threads) and what it printed."""
    with contextlib.ExitStack() as files:
        fin = files.enter_context(stdin.open("rb")) if stdin else subprocess.DEVNULL
        fout = files.enter_context(stdout.open("wb")) if stdout else subprocess.PIPE
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=fin, stdout=fout, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        printed = proc.stdout.read().decode() if proc.stdout else ""
        errors = proc.stderr.read().decode() if proc.stderr else ""
        proc.wait()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {errors[-2000:]}")
    return Run(seconds, usage.ru_utime + usage.ru_stime, printed)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-gib", type=float, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--encrypt-one", nargs=3, metavar=("PLAINTEXT", "OUTPUT", "PUBKEY"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.encrypt_one:
        levere_encrypt(*(Path(p) for p in args.encrypt_one))
        return 0
    size = int(args.size_gib * GiB)
    with scratch("crypt4gh") as root:
        plaintext = root / "plain.bin"
        print(f"  making a {size / GiB:g} GiB file", flush=True)
        md5 = make_file(plaintext, size)
        subprocess.run(
            [CRYPT4GH_KEYGEN, "--sk", str(root / "sk"), "--pk", str(root / "pk"), "--nocrypt", "-f"],
            check=True,
            capture_output=True,
        )
        stock_out, levere_out = root / "stock.c4gh", root / "levere.c4gh"

        cpu: dict[str, list[float]] = {"crypt4gh encrypt": [], "levere": []}

        def stock(_: int) -> float:
            stock_out.unlink(missing_ok=True)
            settle_disk()
            run = timed([CRYPT4GH, "encrypt", "--recipient_pk", str(root / "pk")], plaintext, stock_out)
            cpu["crypt4gh encrypt"].append(run.cpu_seconds)
            return size / run.seconds / 1e6

        def levere(_: int) -> float:
            levere_out.unlink(missing_ok=True)
            settle_disk()
            run = timed(
                [sys.executable, __file__, "--encrypt-one", str(plaintext), str(levere_out), str(root / "pk")]
            )
            if run.printed.split()[0] != md5:
                raise RuntimeError(f"levere's MD5 {run.printed.split()[0]} is not the file's {md5}")
            cpu["levere"].append(run.cpu_seconds)
            return size / run.seconds / 1e6

        rounds = interleave(args.rounds, stock, levere, "MB/s")
        # both made a body of the size the format gives (the stock tool's file also holds its header)
        body = body_size(size)
        if levere_out.stat().st_size != body or stock_out.stat().st_size != body + _stock_header(stock_out):
            raise RuntimeError("an output's size is not the Crypt4GH body size of the plaintext")
        # what the ratio is made of: CPU seconds per GiB, and MD5 alone (serial by nature) as the floor
        # of levere's wall time, whatever the number of cores
        floor = timed(["md5sum", str(plaintext)])
        gib = size / GiB
        for name, seconds in cpu.items():
            print(
                f"  {name}: {statistics.median(seconds) / gib:.2f} CPU s per GiB (user + system, all threads)"
            )
        print(f"  md5sum alone: {floor.seconds / gib:.2f} s and {floor.cpu_seconds / gib:.2f} CPU s per GiB")
        # the stock tools doing levere's whole job: encrypt, then each checksum in a pass of its own
        sha = timed(["sha256sum", str(plaintext)])
        stock_seconds = size / 1e6 / statistics.median(rounds.baseline)
        same_work = size / (stock_seconds + floor.seconds + sha.seconds) / 1e6
        print(
            f"  the same work with the stock tools (crypt4gh encrypt, md5sum, sha256sum in turn): "
            f"{same_work:,.1f} MB/s; levere {statistics.median(rounds.levere) / same_work:.2f}x that"
        )
        ok = report(
            f"Crypt4GH encryption of {size / GiB:g} GiB (levere with MD5 + SHA-256)",
            "crypt4gh encrypt",
            rounds,
            1.5,
        )
    return 0 if ok else 1


def body_size(plaintext_bytes: int) -> int:
    from levere.crypt4gh import body_size as size_of_body

    return size_of_body(plaintext_bytes)


def _stock_header(path: Path) -> int:
    from levere.crypt4gh import read_header

    with path.open("rb") as fh:
        return len(read_header(fh))


if __name__ == "__main__":
    sys.exit(main())
