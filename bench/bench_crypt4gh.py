"""Crypt4GH encryption benchmark: levere's streaming encryption against the stock `crypt4gh encrypt`,
on the same file, in the same run.

    .venv/bin/python bench/bench_crypt4gh.py [--size-gib 4] [--rounds 3] [--output-dir DIR]

Every side reads the plaintext from a file on disk and writes a Crypt4GH file (header, then body) to
the same disk (or to ``--output-dir``, such as a tmpfs, to leave out the disk's write-back), each as
a process of its own: the stock tool from its command line, levere through
`levere.crypt4gh.make_header` and `encrypt_stream`. Figures are plaintext MB/s, rounds alternate the
two sides, and each line gives the median of the per-round ratios.

- Encryption: `encrypt_stream(..., checksums=False)` against `crypt4gh encrypt`. Goal: levere at
  1.5x or better; below it the benchmark fails. After the timed rounds the stock `crypt4gh decrypt`
  opens levere's file and must give back the plaintext.
- Encryption with the plaintext's MD5 and SHA-256 in the same pass (what a plaintext upload into the
  secure zone does) against the stock tools doing the same work in turn: `crypt4gh encrypt`, then
  `md5sum`, then `sha256sum`. Informational: the goal for uploads is measured on the upload path.
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

from bench.harness import GiB, Rounds, interleave, make_file, report, scratch, settle_disk

CRYPT4GH = str(Path(sys.executable).parent / "crypt4gh")
CRYPT4GH_KEYGEN = str(Path(sys.executable).parent / "crypt4gh-keygen")
GOAL = 1.5


def levere_encrypt(plaintext: Path, output: Path, public_key: Path, checksums: bool) -> None:
    """One encryption as levere does it (run in a child process by the benchmark), into a file like
    the stock tool's: header, then body. levere keeps the header apart (in the database); it is made
    first here only so that one file holds both."""
    from levere.crypt4gh import DataKey, PublicKey, encrypt_stream, make_header

    data_key = DataKey.generate()
    header = make_header(data_key, PublicKey.from_pem(public_key.read_text()))
    with plaintext.open("rb", buffering=0) as source, output.open("wb", buffering=0) as sink:
        sink.write(header)
        result = encrypt_stream(source, sink, data_key=data_key, checksums=checksums)
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
        "--output-dir", type=Path, help="where the outputs go (default: beside the plaintext)"
    )
    parser.add_argument(
        "--encrypt-one",
        nargs=4,
        metavar=("PLAINTEXT", "OUTPUT", "PUBKEY", "CHECKSUMS"),
        help=argparse.SUPPRESS,
    )
    args = parser.parse_args()
    if args.encrypt_one:
        *paths, checksums = args.encrypt_one
        levere_encrypt(*(Path(p) for p in paths), checksums=checksums == "yes")
        return 0
    size = int(args.size_gib * GiB)
    gib = size / GiB
    with scratch("crypt4gh") as root:
        plaintext = root / "plain.bin"
        print(f"  making a {gib:g} GiB file", flush=True)
        md5 = make_file(plaintext, size)
        public_key, secret_key = root / "pk", root / "sk"
        subprocess.run(
            [CRYPT4GH_KEYGEN, "--sk", str(secret_key), "--pk", str(public_key), "--nocrypt", "-f"],
            check=True,
            capture_output=True,
        )
        outputs = args.output_dir or root
        stock_out, levere_out = outputs / "stock.c4gh", outputs / "levere.c4gh"
        try:
            return _compare(args.rounds, size, plaintext, md5, public_key, secret_key, stock_out, levere_out)
        finally:
            stock_out.unlink(missing_ok=True)
            levere_out.unlink(missing_ok=True)


def _compare(
    rounds: int,
    size: int,
    plaintext: Path,
    md5: str,
    public_key: Path,
    secret_key: Path,
    stock_out: Path,
    levere_out: Path,
) -> int:
    """Both lines, as the module's docstring says; 0 if encryption alone meets its goal."""
    gib = size / GiB
    cpu: dict[str, list[float]] = {}

    def run(name: str, cmd: list[str], stdin: Path | None = None, stdout: Path | None = None) -> Run:
        settle_disk()
        result = timed(cmd, stdin, stdout)
        cpu.setdefault(name, []).append(result.cpu_seconds)
        return result

    def stock_encrypt() -> float:
        encrypt = [CRYPT4GH, "encrypt", "--recipient_pk", str(public_key)]
        stock_out.unlink(missing_ok=True)
        return run("crypt4gh encrypt", encrypt, plaintext, stock_out).seconds

    def levere(checksums: bool) -> float:
        name = "levere, with MD5 + SHA-256" if checksums else "levere"
        one = [str(plaintext), str(levere_out), str(public_key), "yes" if checksums else "no"]
        levere_out.unlink(missing_ok=True)
        result = run(name, [sys.executable, __file__, "--encrypt-one", *one])
        if checksums and result.printed.split()[0] != md5:
            raise RuntimeError(f"levere's MD5 {result.printed.split()[0]} is not the file's {md5}")
        return size / result.seconds / 1e6

    def stock_same_work() -> float:
        seconds = stock_encrypt()
        for tool in ("md5sum", "sha256sum"):
            seconds += run(tool, [tool, str(plaintext)]).seconds
        return size / seconds / 1e6

    print("  encryption alone", flush=True)
    alone = interleave(rounds, lambda _: size / stock_encrypt() / 1e6, lambda _: levere(False), "MB/s")
    _check_levere_output(levere_out, stock_out, secret_key, size, md5)
    print("  encryption with MD5 + SHA-256 of the plaintext", flush=True)
    hashed = interleave(rounds, lambda _: stock_same_work(), lambda _: levere(True), "MB/s")

    for name, seconds in cpu.items():
        print(f"  {name}: {statistics.median(seconds) / gib:.2f} CPU s per GiB (user + system, all threads)")
    _informational(
        f"Crypt4GH encryption with MD5 + SHA-256 of {gib:g} GiB",
        "crypt4gh encrypt, md5sum, sha256sum in turn",
        hashed,
    )
    ok = report(f"Crypt4GH encryption of {gib:g} GiB", "crypt4gh encrypt", alone, GOAL)
    return 0 if ok else 1


def _check_levere_output(levere_out: Path, stock_out: Path, secret_key: Path, size: int, md5: str) -> None:
    """Outside the timed part: both files have the size the format gives, and the stock tool
    decrypts levere's back to the plaintext."""
    for path in (levere_out, stock_out):
        if path.stat().st_size != _header_size(path) + body_size(size):
            raise RuntimeError(f"{path.name} is not a Crypt4GH file of the plaintext's size")
    decrypt = subprocess.Popen(
        [CRYPT4GH, "decrypt", "--sk", str(secret_key)],
        stdin=levere_out.open("rb"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    summed = subprocess.run(["md5sum"], stdin=decrypt.stdout, capture_output=True, text=True, check=True)
    _, errors = decrypt.communicate()
    if decrypt.returncode != 0 or summed.stdout.split()[0] != md5:
        raise RuntimeError(
            f"crypt4gh decrypt does not give back the plaintext from levere's file: {errors!r}"
        )
    print("  crypt4gh decrypt gives back the plaintext from levere's file", flush=True)


def _informational(title: str, baseline_name: str, rounds: Rounds) -> None:
    print(
        f"{title}: {baseline_name} median {statistics.median(rounds.baseline):,.1f} {rounds.unit}, "
        f"levere median {statistics.median(rounds.levere):,.1f} {rounds.unit}; "
        f"median ratio {rounds.median_ratio:.2f} (no goal)",
        flush=True,
    )


def body_size(plaintext_bytes: int) -> int:
    from levere.crypt4gh import body_size as size_of_body

    return size_of_body(plaintext_bytes)


def _header_size(path: Path) -> int:
    from levere.crypt4gh import read_header

    with path.open("rb") as fh:
        return len(read_header(fh))


if __name__ == "__main__":
    sys.exit(main())
