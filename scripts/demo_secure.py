"""The sensitive half of `make demo`: human data through the secure zone, encrypted at rest.

A sensitive application names the users' secure project; the helpdesk opens a shared disk between
the facility's secure project and the users' one; the facility uploads one file it encrypted itself
with the stock `crypt4gh` tool and one in plaintext that levere encrypts while streaming, runs the
standard analysis on the disk and releases the run; from then on the facility is refused, the PI
downloads files encrypted to a key of their own and decrypts them with the stock tool, an invited
helpdesk operator reads the data until an end date, and the released data is copied to long-term
storage as Crypt4GH bodies.
"""

from __future__ import annotations

import gzip
import hashlib
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp

SECURE_RUN = "231102_NB501234_0077_AHSENS"
SECURE_PROJECT = "p1234"
FACILITY_PROJECT = "p11"
TOOLS = Path(sys.executable).parent  # the venv's stock crypt4gh and crypt4gh-keygen


def _root(demo: Any) -> Path:
    return Path(demo.env["LEVERE_DATA_DIR"]).parent.parent


def _shown(demo: Any, path: Path) -> str:
    return str(path.relative_to(_root(demo)))


def _fastq(path: Path, sample: str, reads: int, seed: int) -> None:
    rng = random.Random(seed)
    lines = []
    for n in range(reads):
        seq = "".join(rng.choice("ACGT") for _ in range(100))
        qual = "".join(rng.choice("FFFF:,") for _ in range(100))
        lines.append(f"@{SECURE_RUN}:{sample}:{n} 1:N:0\n{seq}\n+\n{qual}\n")
    path.write_bytes(gzip.compress("".join(lines).encode(), 6))


def _tool(demo: Any, who: str, *args: str, stdin: Path | None = None, stdout: Path | None = None) -> None:
    """A stock Crypt4GH command as the person types it."""
    shown = (
        " ".join(args)
        + (f" < {_shown(demo, stdin)}" if stdin else "")
        + (f" > {_shown(demo, stdout)}" if stdout else "")
    )
    demo.prompt(who, shown)
    with (
        open(stdin, "rb") if stdin else open("/dev/null", "rb") as given,
        open(stdout, "wb") if stdout else open("/dev/null", "wb") as taken,
    ):
        done = subprocess.run(
            [str(TOOLS / args[0]), *args[1:]], stdin=given, stdout=taken, stderr=subprocess.PIPE,
            env=demo.env | {"C4GH_PASSPHRASE": ""}, cwd=_root(demo), check=False,
        )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"demo: {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")


def second_factor(demo: Any, who: str, email: str, password: str) -> None:
    """Enrol TOTP and sign in with it: every action in the secure zone needs a second factor."""
    import re
    import urllib.parse

    uri = re.search(r"otpauth://\S+", demo.levere(who, "account", "totp-enrol"))
    if uri is None:
        raise SystemExit("demo: totp-enrol showed no otpauth:// link")
    totp = pyotp.TOTP(urllib.parse.parse_qs(urllib.parse.urlparse(uri.group(0)).query)["secret"][0])
    demo.levere(who, "account", "totp-confirm", totp.now())
    demo.levere(who, "login", "--email", email, "--totp", totp.at(time.time() + 30), password=password)


def sensitive(demo: Any, staff: str, pi: str, helpdesk: str, passwords: dict[str, str]) -> None:
    root = Path(demo.env["LEVERE_DATA_DIR"]).parent
    demo.step("Sensitive data: Kari applies for a project on human exomes, naming its secure project p1234")
    form = root / "application-sensitive.toml"
    form.write_text(
        "[application]\n"
        'title = "Exome sequencing of familial hypercholesterolaemia"\n'
        f'pi_email = "{pi}"\n'
        'data_ownership = "University of Bergen, Department of Clinical Science"\n'
        'funding_source = "Western Norway Regional Health Authority"\n'
        'grant_id = "HV-F-12345"\n'
        'description = "Whole-exome sequencing of 40 families to find new causal variants."\n'
        'facility = "norseq-oslo"\n'
        'quota_longterm_bytes = "100G"\n'
        "sensitive = true\n"
        f'secure_project_id = "{SECURE_PROJECT}"\n'
    )
    demo.prompt("staff", f"cat {_shown(demo, form)}")
    print(form.read_text(), end="")
    saved = demo.levere("staff", "apply", "--file", _shown(demo, form))
    number = saved.split("application ", 1)[1].split()[0]
    demo.levere("pi", "applications", "submit", number)
    approved = demo.levere("helpdesk", "applications", "approve", number)
    identifier = approved.split("project ", 1)[1].split()[0].rstrip(".;:,")
    demo.levere("helpdesk", "secure", "show", SECURE_PROJECT)

    demo.step("Kari and Ola set up two-factor sign-in: the secure zone refuses a session without it")
    second_factor(demo, "staff", staff, passwords[staff])
    second_factor(demo, "pi", pi, passwords[pi])

    demo.step("The helpdesk registers the node's own secure project and opens a shared disk for 30 days")
    demo.levere("helpdesk", "secure", "register", FACILITY_PROJECT, "--facility", "norseq-oslo")
    until = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%d")
    opened = demo.levere("helpdesk", "secure", "disk", "create", FACILITY_PROJECT, SECURE_PROJECT,
                         "--until", until, "--quota", "10G")  # fmt: skip
    disk = opened.split("shared disk ", 1)[1].split()[0]

    demo.step("Kari encrypts one file to the disk's key with the stock crypt4gh tool; the other goes plain")
    run = root / "sequencer-secure" / SECURE_RUN
    (run / "fastq").mkdir(parents=True)
    plain = run / "fastq" / "FH01_S1_L001_R1_001.fastq.gz"
    _fastq(plain, "FH01", 4000, 7)
    source = run / "fastq" / "FH02_S2_L001_R1_001.fastq.gz"
    _fastq(source, "FH02", 4000, 8)
    # the sequencer's checksum file covers the plaintext; levere checks the encrypted file's
    # plaintext against its entry
    listed = sorted(p for p in run.rglob("*") if p.is_file())
    (run / "md5sum.txt").write_text(
        "".join(f"{hashlib.md5(p.read_bytes()).hexdigest()}  {p.relative_to(run)}\n" for p in listed)
    )
    key = root / f"{disk}.pub"
    demo.prompt("staff", f"levere secure pubkey {disk} > {_shown(demo, key)}")
    key.write_text(demo.levere("staff", "secure", "pubkey", disk, show=False))
    encrypted = source.with_name(source.name + ".c4gh")
    _tool(
        demo,
        "staff",
        "crypt4gh",
        "encrypt",
        "--recipient_pk",
        _shown(demo, key),
        stdin=source,
        stdout=encrypted,
    )
    kept = root / "sequencer-secure" / source.name
    source.rename(kept)  # the plaintext stays at the facility
    demo.levere("staff", "deliver", identifier, _shown(demo, run), "--disk", disk)
    demo.levere("staff", "secure", "ls", disk)

    demo.step("Kari runs the standard analysis on the disk; the report is stored encrypted with the run")
    demo.levere("staff", "secure", "analyse", disk, SECURE_RUN)
    deadline = time.monotonic() + 120
    while True:
        shown = demo.levere("staff", "secure", "qc", disk, SECURE_RUN, show=False, check=False)
        if "FH01" in shown and "FH02" in shown:
            break
        if time.monotonic() > deadline:
            raise SystemExit("demo: the analysis did not finish in time")
        time.sleep(1)
    demo.levere("staff", "secure", "qc", disk, SECURE_RUN)

    demo.step(
        "Kari releases the run to p1234, a job the command follows: headers move to the users' key, "
        "the bodies stay as they are"
    )
    demo.levere("staff", "secure", "release", disk, SECURE_RUN)
    demo.levere("staff", "secure", "ls", disk, check=False)
    demo.levere("staff", "download", disk, SECURE_RUN, "--to", _shown(demo, root / "kari"),
                "--pubkey", _shown(demo, key), check=False)  # fmt: skip

    demo.step(
        "Ola makes a Crypt4GH key pair, downloads the run encrypted to it and decrypts it with crypt4gh"
    )
    keys = root / "ola-keys"
    keys.mkdir()
    _tool(demo, "pi", "crypt4gh-keygen", "--sk", _shown(demo, keys / "ola.sec"), "--pk",
          _shown(demo, keys / "ola.pub"), "--nocrypt")  # fmt: skip
    target = root / "ola-downloads"
    demo.levere("pi", "download", SECURE_PROJECT, SECURE_RUN, "--to", _shown(demo, target),
                "--pubkey", _shown(demo, keys / "ola.pub"))  # fmt: skip
    got = target / SECURE_RUN / "fastq" / (plain.name + ".c4gh")
    _tool(demo, "pi", "crypt4gh", "decrypt", "--sk", _shown(demo, keys / "ola.sec"), stdin=got,
          stdout=target / plain.name)  # fmt: skip
    if (target / plain.name).read_bytes() != plain.read_bytes():
        raise SystemExit("demo: the decrypted download differs from what the facility uploaded")
    print(f"crypt4gh decrypt: {plain.name} is byte for byte what the facility uploaded")

    demo.step("Ola lets the helpdesk into p1234 for two weeks, to help with the analysis")
    until = (datetime.now(UTC) + timedelta(days=14)).strftime("%Y-%m-%d")
    demo.levere("pi", "secure", "members", "add", SECURE_PROJECT, helpdesk, "--until", until)
    demo.levere("helpdesk", "secure", "ls", SECURE_PROJECT)
    demo.levere("helpdesk", "secure", "qc", disk, SECURE_RUN)

    demo.step("The released run is copied to long-term storage as Crypt4GH bodies, and verified")
    demo.levere("helpdesk", "sync", identifier)
    demo.levere("helpdesk", "status", identifier)
    demo.identifier_sensitive = identifier
