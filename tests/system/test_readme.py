"""The README's tour, run as written: every ``levere`` command of its shell blocks, in order, as the
person the tour says runs it, against a real ``levere serve`` started the way the README starts it.

Only what cannot be typed literally is substituted (see :class:`Tour.substitute`): the password
(from the environment, as the README says), the TOTP codes (computed from the enrolment secret the
tour printed), each invitation link (from the command output, or the e-mail while invitations
are only e-mailed), the service's port, the data folder, a generated run folder for
``/runs/...``, ``~`` (a home folder of the test), the project identifier the approval printed, and
the id of the token the tour created. Each command must exit 0 unless :data:`EXPECTED_EXIT` says otherwise.

To follow a change of the README, adjust the tables below: :data:`PERSONS` (who runs what),
:data:`ALTERNATIVES` (commands shown as alternatives to the one before them) and
:data:`EXPECTED_EXIT`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pyotp
import pytest

from levere.context import Context
from tests.cli_live import make_run
from tests.conftest import PG_URL, Mailbox, body_of, free_port
from tests.markdown_blocks import ROOT, blocks, shell_lines

README = ROOT / "README.md"
PASSWORDS = {
    "helpdesk@elixir.example.no": "helpdesk-secret-1",
    "kari@norseq.example.no": "staff-secret-12",
    "ola.pi@uib.example.no": "pi-secret-1234",
}
#: who runs a command, by the first pattern it matches (commands naming --email run as that person)
PERSONS: list[tuple[str, str]] = [
    (r"^levere (init|serve)\b", "helpdesk@elixir.example.no"),
    (r"^levere (apply|deliver)\b", "kari@norseq.example.no"),
    (r"^levere applications (show|submit)\b", "ola.pi@uib.example.no"),
    (
        r"^levere (members|projects assign-facility|free|restore|ls|download|manifest)\b",
        "ola.pi@uib.example.no",
    ),
    (r"^levere account (tokens|token-create|token-revoke)\b", "ola.pi@uib.example.no"),
    (r"^levere ", "helpdesk@elixir.example.no"),  # the helpdesk runs the rest
]
#: commands the README shows as alternatives to approving: each runs on an application of its own,
#: drafted and submitted like the first one
ALTERNATIVES = (r"^levere applications request-changes 1\b", r"^levere applications reject 1\b")
#: commands that end with another exit code than 0, as the README says
EXPECTED_EXIT: dict[str, int] = {}
#: False: the tour runs with mail off, as the README sets levere up, and each invitation link is
#: read from the output of the command that made it; True: mail goes to a real SMTP sink and links
#: not printed are read from the e-mail
MAIL_NEEDED_FOR_LINKS = False
RUN = "230601_A00123_0042"


@dataclass(frozen=True)
class Command:
    line: int
    text: str

    @property
    def where(self) -> str:
        return f"README.md:{self.line}: {self.text}"


def tour() -> list[Command]:
    """The README's ``levere`` commands and ``export LEVERE_...`` lines, in order."""
    found = []
    for block in blocks(README, "sh"):
        for line, text in shell_lines(block):
            if re.match(r"^(export LEVERE_|(LEVERE_\w+=\S+ )*levere )", text):
                found.append(Command(line, text))
    return found


@dataclass
class Tour:
    folder: Path
    mailbox: Mailbox | None
    database_url: str
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    server: subprocess.Popen[bytes] | None = None
    identifier: str = ""
    totp: pyotp.TOTP | None = None
    totp_step: int = 0
    invited: list[str] = field(default_factory=list)  # e-mails, in the order they were invited
    links: dict[str, str] = field(default_factory=dict)
    token_id: str = ""
    output: str = ""

    def __post_init__(self) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith("LEVERE_")}
        self.env = base | {
            "HOME": str(self.folder / "home"),
            "COLUMNS": "200",
            "LEVERE_DATABASE_URL": self.database_url,
            "LEVERE_PUBLIC_URL": f"http://127.0.0.1:{self.port}",  # where links point, as when deployed
        }
        if MAIL_NEEDED_FOR_LINKS and self.mailbox is not None:
            self.env |= {"LEVERE_SMTP__ENABLED": "true", "LEVERE_SMTP__HOST": "127.0.0.1"}
        (self.folder / "home").mkdir()
        self.run_folder = make_run(self.folder / "runs" / RUN, {"R1.fastq": 2 * 1024 * 1024}, tiny=3)
        (self.run_folder / "SampleSheet.csv").write_text("[Data]\nSample_ID,Sample_Name\nS1,S1\n")
        listed = sorted(p for p in self.run_folder.rglob("*") if p.is_file() and p.name != "md5sum.txt")
        (self.run_folder / "md5sum.txt").write_text(
            "".join(
                f"{hashlib.md5(p.read_bytes()).hexdigest()}  {p.relative_to(self.run_folder)}\n"
                for p in listed
            )
        )

    # --- what must be substituted ------------------------------------------------------------------
    def who(self, text: str) -> str:
        if (email := re.search(r"--email (\S+)", text)) and not text.startswith("levere init"):
            return email.group(1)
        return next(person for pattern, person in PERSONS if re.search(pattern, text))

    def substitute(self, args: list[str], person: str) -> list[str]:
        out = []
        for arg in args:
            arg = arg.replace("http://127.0.0.1:8080", f"http://127.0.0.1:{self.port}")
            arg = arg.replace("/srv/levere", str(self.folder / "srv"))
            arg = arg.replace(f"/runs/{RUN}", str(self.run_folder))
            if self.identifier:
                arg = arg.replace("LEV-2026-0001", self.identifier)
            if arg.startswith("~/"):
                arg = str(self.folder / "home" / arg[2:])
            if arg.startswith("https://levere.example.no/invite/"):
                arg = self.link_for(person)
            out.append(arg)
        if args[:3] == ["levere", "account", "totp-confirm"]:
            out[3] = self.code()
        if "--totp" in args:
            out[args.index("--totp") + 1] = self.code()
        if args[:3] == ["levere", "account", "token-revoke"]:
            out[3] = self.token_id  # the id token-create printed
        if args[:2] == ["levere", "serve"]:
            out[out.index("--port") + 1] = str(self.port)
        return out

    def link_for(self, person: str) -> str:
        if person not in self.links and MAIL_NEEDED_FOR_LINKS and self.mailbox is not None:
            message = self.mailbox.wait_for(person, "account")
            self.links[person] = re.search(r"https?://\S+/invite/\S+", body_of(message)).group(0)  # type: ignore[union-attr]
        return self.links[person]

    def code(self) -> str:
        """A TOTP code not used yet (a code is good once), computed as the authenticator app would."""
        assert self.totp is not None, "the tour used a code before enrolling"
        step = max(int(time.time()) // 30, self.totp_step + 1)
        while step > int(time.time()) // 30:  # the app shows the next code when its time comes
            time.sleep(1)
        self.totp_step = step
        return self.totp.at(step * 30)

    # --- running ---------------------------------------------------------------------------------
    def person_env(self, person: str) -> dict[str, str]:
        name = person.split("@")[0]
        return self.env | {
            "LEVERE_CLI_CONFIG": str(self.folder / f"{name}.toml"),
            "LEVERE_PASSWORD": PASSWORDS[person],
        }

    def step(self, command: Command) -> None:
        text = command.text
        if text.startswith("export "):
            name, _, value = text.removeprefix("export ").partition("=")
            self.env[name] = self.substitute(shlex.split(value), "")[0]
            return
        words = shlex.split(text)
        while "=" in words[0]:  # an assignment before the command (LEVERE_PASSWORD=...): from our env
            words.pop(0)
        accepting = words[1:3] == ["account", "accept-invite"]
        person = self.invited.pop(0) if accepting else self.who(text)
        if any(re.search(p, text) for p in ALTERNATIVES):
            words[3] = self.fresh_application()
        args = self.substitute(words, person)
        if args[:2] == ["levere", "serve"]:
            self.start(args)
            return
        done = self.levere(person, args[1:])
        expected = next((code for pattern, code in EXPECTED_EXIT.items() if re.search(pattern, text)), 0)
        assert done.returncode == expected, f"{command.where}\n{done.stdout}{done.stderr}"
        self.learn(args, done.stdout + done.stderr)

    def levere(self, person: str, args: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "levere.cli.main", *args],
            env=self.person_env(person), cwd=self.folder, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    def learn(self, args: list[str], output: str) -> None:
        """What a person reads off the screen for the next commands."""
        if args[1:3] == ["account", "totp-enrol"]:
            uri = re.search(r"otpauth://\S+", output).group(0)  # type: ignore[union-attr]
            self.totp = pyotp.TOTP(urllib.parse.parse_qs(urllib.parse.urlparse(uri).query)["secret"][0])
            self.totp_step = int(time.time()) // 30 - 2
        invitee = next((a for a in args if "@" in a), None)
        if invitee and (found := re.search(r"https?://\S+/invite/[\w.-]+", output)):
            self.links[invitee] = found.group(0)  # a fresh link replaces an earlier one
        if args[1:3] == ["applications", "approve"]:
            self.identifier = re.search(r"LEV-\d{4}-\d{4}", output).group(0)  # type: ignore[union-attr]
        if args[1:3] == ["account", "token-create"]:
            self.token_id = re.search(r"\bid ([0-9a-f]+)\b", output).group(1)  # type: ignore[union-attr]
        if args[1:3] in (["facilities", "add-staff"], ["users", "create"]):
            self.invited.append(self._invitee(args))

    @staticmethod
    def _invitee(args: list[str]) -> str:
        return next(a for a in args if "@" in a)

    def fresh_application(self) -> str:
        """Another application drafted by Kari from the README's form and submitted by Ola."""
        drafted = self.levere("kari@norseq.example.no", ["apply", "--file", "application.toml"])
        assert drafted.returncode == 0, drafted.stderr
        number = re.search(r"application (\d+) saved", drafted.stdout).group(1)  # type: ignore[union-attr]
        submitted = self.levere("ola.pi@uib.example.no", ["applications", "submit", number])
        assert submitted.returncode == 0, submitted.stderr
        return number

    def start(self, args: list[str]) -> None:
        log = open(self.folder / "server.log", "wb")  # noqa: SIM115 - closed with the process
        self.server = subprocess.Popen(
            [sys.executable, "-m", "levere.cli.main", *args[1:]], env=self.person_env(self.who("levere serve")),
            cwd=self.folder, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/api/health").status_code == 200:
                    return
            except httpx.TransportError:
                if self.server.poll() is not None:
                    break
                time.sleep(0.1)
        raise AssertionError(f"levere serve did not start:\n{(self.folder / 'server.log').read_text()}")

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            try:
                self.server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()


@pytest.fixture
def readme_tour(tmp_path: Path, database_url: str, smtp_server: tuple[Mailbox, int]) -> Iterator[Tour]:
    mailbox, port = smtp_server
    mailbox.clear()
    t = Tour(tmp_path, mailbox, database_url)
    t.env["LEVERE_SMTP__PORT"] = str(port)
    # the application form the README shows, where `levere apply --file application.toml` reads it
    form = next(b for b in blocks(README, "toml") if "[application]" in b.text)
    (tmp_path / "application.toml").write_text(form.text)
    try:
        yield t
    finally:
        t.stop()


def test_the_tour_finds_the_commands_it_runs() -> None:
    commands = [c.text for c in tour()]
    assert commands[0].startswith("export LEVERE_DATA_DIR=")
    for expected in ("levere serve", "levere account totp-enrol", "levere apply --file", "levere deliver",
                     "levere sync", "levere account token-revoke", "levere audit verify"):  # fmt: skip
        assert any(c.startswith(expected) for c in commands), expected


@pytest.mark.skipif(
    bool(PG_URL), reason="the README's tour is the embedded default (SQLite in the data folder): run once"
)
def test_every_readme_command_runs_as_written(readme_tour: Tour) -> None:
    for command in tour():
        readme_tour.step(command)
    # what the tour did is there: the delivery, downloaded and verified, and the revoked token
    downloaded = readme_tour.folder / "home" / "data" / RUN / "R1.fastq"
    assert downloaded.read_bytes() == (readme_tour.run_folder / "R1.fastq").read_bytes()
    manifests = list((readme_tour.folder / "home" / "data" / RUN).glob("*md5*"))  # `levere manifest ... -o`
    assert manifests, "levere manifest wrote nothing where the README says"
    tokens = readme_tour.levere("ola.pi@uib.example.no", ["--json", "account", "tokens"])
    revoked = next(t for t in json.loads(tokens.stdout) if t["id"] == readme_tour.token_id)
    assert revoked["revoked_at"] is not None


# --- what the README needed fixed to run as written --------------------------------------------------


def test_a_token_is_revoked_by_its_id_or_a_unique_start_of_it(ctx: Context) -> None:
    from levere.db.models import ApiToken
    from levere.domain.errors import NotFound, ValidationFailed
    from levere.services import accounts
    from tests.helpers import make_user

    owner = make_user(ctx, "owner@uib.example.org", password=None)
    other = make_user(ctx, "other@uib.example.org", password=None)
    with ctx.tx() as session:
        mine = accounts.issue_token(ctx, session, session.merge(owner), "laptop").record.id
        theirs = accounts.issue_token(ctx, session, session.merge(other), "laptop").record.id
        twins = [accounts.issue_token(ctx, session, session.merge(owner), f"twin {i}").record for i in (1, 2)]
        twins[0].id, twins[1].id = "abcd000000000001", "abcd000000000002"  # ids that share a start
    with ctx.tx() as session:
        assert accounts.revoke_token(session, session.merge(owner), mine[:6]).id == mine
    with ctx.tx() as session:
        assert session.get(ApiToken, mine).revoked_at is not None  # type: ignore[union-attr]
    with (
        ctx.tx() as session,
        pytest.raises(ValidationFailed, match="more than one token's id starts with abcd"),
    ):
        accounts.revoke_token(session, session.merge(owner), "abcd")
    with ctx.tx() as session, pytest.raises(NotFound):
        accounts.revoke_token(session, session.merge(owner), theirs[:6])  # someone else's: not found
    with ctx.tx() as session, pytest.raises(NotFound):
        accounts.revoke_token(session, session.merge(owner), "abc")  # too short to look up
    with ctx.tx() as session:
        assert (
            accounts.revoke_token(session, session.merge(owner), "abcd000000000002").id == "abcd000000000002"
        )


def test_a_relative_sample_sheet_is_found_in_the_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from levere.cli.delivery.metadata import metadata_path

    run = tmp_path / "runs" / RUN
    run.mkdir(parents=True)
    (run / "SampleSheet.csv").write_text("[Data]\n")
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert metadata_path(Path("SampleSheet.csv"), run) == run / "SampleSheet.csv"
    (here / "SampleSheet.csv").write_text("[Data]\n")  # one in the current folder is the one meant
    assert metadata_path(Path("SampleSheet.csv"), run) == Path("SampleSheet.csv")
    assert metadata_path(Path("missing.csv"), run) == Path("missing.csv")  # the error names what was given
