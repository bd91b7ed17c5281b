"""The data half of `make demo`: a facility delivers a run, a member downloads it, long-term storage keeps it.

Called by scripts/demo.py with its :class:`Demo` (the service, the SMTP sink and the CLI as each person).
"""

from __future__ import annotations

import gzip
import hashlib
import random
import subprocess
import time
from pathlib import Path
from typing import Any

RUN = "230914_NB501234_0042_AHXYZ"
SAMPLES = ("LS_nauplius", "LS_copepodid", "LS_adult_female")


def make_run_folder(root: Path) -> Path:
    """A small Illumina-like run folder: gzipped FASTQ pairs, a sample sheet, an md5sum.txt."""
    run = root / RUN
    fastq = run / "fastq"
    fastq.mkdir(parents=True)
    rng = random.Random(42)
    for sample in SAMPLES:
        for read in ("R1", "R2"):
            lines = []
            for n in range(20_000):
                seq = "".join(rng.choice("ACGT") for _ in range(75))
                lines.append(f"@{RUN}:{sample}:{n} {read}\n{seq}\n+\n{'F' * 75}\n")
            (fastq / f"{sample}_S1_L001_{read}_001.fastq.gz").write_bytes(
                gzip.compress("".join(lines).encode(), 6)
            )
    (run / "SampleSheet.csv").write_text(
        "[Data]\nSample_ID,Sample_Name,Index\n" + "".join(f"{s},{s},ACGT{i}\n" for i, s in enumerate(SAMPLES))
    )
    listed = sorted(p for p in run.rglob("*") if p.is_file())
    (run / "md5sum.txt").write_text(
        "".join(f"{hashlib.md5(p.read_bytes()).hexdigest()}  {p.relative_to(run)}\n" for p in listed)
    )
    return run


def deliver_and_download(demo: Any) -> None:
    identifier = demo.identifier
    demo.step("The NorSeq node delivers a run folder into the project, by its identifier")
    run = make_run_folder(Path(demo.env["LEVERE_DATA_DIR"]).parent / "sequencer")
    demo.prompt("staff", f"ls -lR {_shown(demo, run)}")
    subprocess.run(["ls", "-lR", _shown(demo, run)], cwd=_root(demo), check=False)
    demo.levere("staff", "deliver", identifier, _shown(demo, run), "--metadata", "SampleSheet.csv")
    demo.inbox.wait_for("ingrid@uib.example.no", "New data")

    demo.step("Ingrid sees the delivery, downloads it (checksums verified) and checks it with md5sum -c")
    demo.levere("member", "ls", identifier)
    target = Path(demo.env["LEVERE_DATA_DIR"]).parent / "ingrid-downloads"
    demo.levere("member", "download", identifier, RUN, "--to", _shown(demo, target))
    manifest = target / RUN / "manifest.md5"
    demo.levere(
        "member", "manifest", identifier, RUN, "--format", "md5sum", "--output", _shown(demo, manifest)
    )
    demo.prompt("member", f"(cd {_shown(demo, target / RUN)} && md5sum -c --quiet manifest.md5)")
    check = subprocess.run(
        ["md5sum", "-c", "--quiet", "manifest.md5"],
        cwd=target / RUN,
        capture_output=True,
        text=True,
        check=False,
    )
    if check.returncode != 0:
        raise SystemExit(f"demo: md5sum -c failed on the download:\n{check.stdout}{check.stderr}")
    print(f"md5sum -c: every file of {RUN} in {_shown(demo, target / RUN)} matches the manifest")


def _root(demo: Any) -> Path:
    """The folder the demo runs its commands in (the repository's): .demo/ is in it."""
    return Path(demo.env["LEVERE_DATA_DIR"]).parent.parent


def _shown(demo: Any, path: Path) -> str:
    """``path`` as typed in the demo's commands: relative to the folder they run in."""
    return str(path.relative_to(_root(demo)))


def wait_synced(demo: Any, identifier: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    repeated = "again until every file is on long-term storage"
    while time.monotonic() < deadline:
        files = demo.json("helpdesk", "ls", identifier, repeated=repeated)
        repeated = ""  # shown once
        if files and all(f["tiers"].get("longterm") in ("present", "synced") for f in files):
            return
        time.sleep(0.5)
    raise SystemExit("demo: the delivery did not reach long-term storage in time")


def longterm(demo: Any) -> None:
    identifier = demo.identifier
    demo.step("The sealed delivery is copied to long-term storage and verified (automatic for this project)")
    wait_synced(demo, identifier)
    demo.levere("helpdesk", "status", identifier)
    demo.inbox.wait_for("ola.pi@uib.example.no", "safely on long-term storage")

    demo.step("Ola frees the run from the working area (it is safe on long-term storage), then restores it")
    demo.levere("pi", "free", identifier, RUN)
    demo.levere("pi", "projects", "show", identifier)
    demo.levere("pi", "restore", identifier, RUN)
    demo.levere("pi", "ls", identifier)

    demo.step("The helpdesk scrubs every stored copy on every tier")
    demo.levere("helpdesk", "verify", identifier)
