"""What the CLI says: ``--json`` anywhere, errors as one line or one JSON object, usage errors, hints,
who may do what, plurals, units, help text, ``--version``, notifications, withdrawing an application,
and manifests that never overwrite a run's own files."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer
from sqlalchemy import select

from levere.cli.delivery.progress import _binary_rate_column
from levere.cli.errors import report_levere
from levere.cli.main import app, invoke
from levere.context import Context
from levere.crypt4gh import (
    PrivateKey,
    PublicKey,
    encrypt_stream,
    iter_plaintext,
    make_header,
    read_data_key,
    read_header,
)
from levere.db.models import AuditEvent
from levere.domain.errors import LevereError
from levere.services import accounts, scrub, sync
from tests.cli_live import Env, cli_env, levere, make_env, make_run, one_line_error
from tests.conftest import Mailbox
from tests.helpers import token_for

# --- the command tree, in this process (no service needed) ----------------------------------------


def _commands() -> list[tuple[list[str], Any]]:
    """Every group and command as (its words after 'levere', the click command)."""
    found: list[tuple[list[str], Any]] = []

    def walk(words: list[str], command: Any) -> None:
        found.append((words, command))
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk([*words, name], sub)

    walk([], typer.main.get_command(app))
    return found


COMMANDS = _commands()
#: commands that start something long-running when their arguments parse: only their help is run
SERVERS = {("serve",), ("worker",), ("master-key", "rewrap")}


@pytest.fixture
def signed_out(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("LEVERE_URL", "LEVERE_TOKEN", "LEVERE_EMAIL", "LEVERE_PASSWORD", "LEVERE_TOTP"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LEVERE_CLI_CONFIG", str(tmp_path / "nobody.toml"))
    monkeypatch.setenv("COLUMNS", "200")


def test_the_walk_finds_the_whole_tree() -> None:
    names = {" ".join(words) for words, _ in COMMANDS}
    assert {"", "projects list", "ls", "manifest", "applications withdraw", "jobs show", "deliver"} <= names
    assert len(COMMANDS) > 40


@pytest.mark.usefixtures("signed_out")
def test_every_command_and_group_takes_json_after_its_name(capsys: pytest.CaptureFixture[str]) -> None:
    for words, _ in COMMANDS:
        assert invoke([*words, "--help"]) == 0, words
        assert "--json" in capsys.readouterr().out, f"levere {' '.join(words)} --help shows no --json"


@pytest.mark.usefixtures("signed_out")
def test_json_given_after_any_command_turns_its_errors_into_json(capsys: pytest.CaptureFixture[str]) -> None:
    """Signed out, every command fails: a missing argument, or no sign-in. Either way the failure is
    one JSON object on stderr, so --json was accepted where it was given, never "No such option"."""
    leaves = [words for words, command in COMMANDS if words and not hasattr(command, "commands")]
    for words in leaves:
        if tuple(words) in SERVERS or words == ["logout"]:
            continue
        code = invoke([*words, "--json"])
        out, err = capsys.readouterr()
        assert out == "", words
        error = json.loads(err)
        assert error["exit_code"] == code != 0, words
        assert error["error"] in {"usage", "not_signed_in"}, (words, error)
        assert "No such option" not in error["message"]


@pytest.mark.usefixtures("signed_out")
def test_json_before_or_after_the_command_is_the_same(capsys: pytest.CaptureFixture[str]) -> None:
    outcomes = []
    for args in (
        ["--json", "projects", "list"],
        ["projects", "--json", "list"],
        ["projects", "list", "--json"],
    ):
        code = invoke(args)
        out, err = capsys.readouterr()
        outcomes.append((code, out, json.loads(err)))
    assert outcomes[0] == outcomes[1] == outcomes[2]
    code, _, error = outcomes[0]
    assert code == 9 and error["error"] == "not_signed_in" and error["exit_code"] == 9
    assert "levere login --url http://127.0.0.1:8080 --email" in error["message"]


@pytest.mark.usefixtures("signed_out")
def test_not_signed_in_says_how_to_sign_in_with_its_own_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert invoke(["projects", "list"]) == 9
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(
        "error: not signed in: sign in first with 'levere login --url http://127.0.0.1:8080 "
    )
    assert "invalid input" not in err


@pytest.mark.usefixtures("signed_out")
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["projects", "list", "--bogus"], "No such option: --bogus (see 'levere projects list --help')"),
        (["applications", "show"], "Missing argument"),
        (["manifest", "LEV-1", "RUN", "--format", "xml"], "Invalid value for '--format'"),
        (["nonsense"], "No such command"),
    ],
)
def test_usage_errors_are_one_line_with_exit_code_2(
    capsys: pytest.CaptureFixture[str], args: list[str], words: str
) -> None:
    assert invoke(args) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: ") and words in err, err
    assert "╭" not in err  # no box
    assert invoke([*args, "--json"]) == 2
    error = json.loads(capsys.readouterr().err)
    assert error["error"] == "usage" and error["exit_code"] == 2 and words in error["message"]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert invoke(["--version"]) == 0
    assert capsys.readouterr().out == f"levere {version('levere')}\n"


def test_no_help_text_breaks_a_line_inside_its_summary() -> None:
    """The summary (first paragraph) is what 'levere --help' lists: a line break in the docstring's
    summary shows as a break in the middle of a sentence there."""
    for words, command in COMMANDS:
        summary = (command.help or "").strip().split("\n\n")[0]
        assert "\n" not in summary, f"levere {' '.join(words)}: {summary!r}"


def test_rates_are_in_the_same_binary_units_as_the_totals() -> None:
    from rich.progress import TransferSpeedColumn

    column = _binary_rate_column(TransferSpeedColumn)
    shown = column.render(SimpleNamespace(finished_speed=None, speed=3 * 1024 * 1024 + 1))
    assert shown.plain == "3.0 MiB/s"
    assert column.render(SimpleNamespace(finished_speed=2048.0, speed=None)).plain == "2.0 KiB/s"


def _crypt4gh_failures() -> dict[str, Callable[[], object]]:
    """Each Crypt4GH error as the core raises it, by its code."""
    key = PrivateKey.generate()
    body = io.BytesIO()
    data_key = encrypt_stream(io.BytesIO(b"sensitive" * 1000), body).data_key
    header = make_header(data_key, key.public_key)
    damaged = bytearray(body.getvalue())
    damaged[40] ^= 1
    return {
        "not_crypt4gh": lambda: read_header(io.BytesIO(b"plain text, not encrypted")),
        "encrypted_to_another_key": lambda: read_data_key(header, PrivateKey.generate()),
        "ciphertext_damaged": lambda: list(iter_plaintext(io.BytesIO(bytes(damaged)), data_key)),
        "invalid_public_key": lambda: PublicKey.from_pem(key.to_crypt4gh()),
        "invalid_secret_key": lambda: PrivateKey.from_crypt4gh(key.public_key.to_pem()),
    }


@pytest.mark.parametrize("code", list(_crypt4gh_failures()))
def test_crypt4gh_errors_say_how_to_encrypt_or_which_key_to_give(
    code: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(LevereError) as raised:
        _crypt4gh_failures()[code]()
    assert raised.value.code == code
    report_levere(raised.value, as_json=True)
    error = json.loads(capsys.readouterr().err)
    assert error["error"] == code and error["hint"]
    if code in ("not_crypt4gh", "encrypted_to_another_key"):
        assert "levere secure pubkey" in error["hint"] and "crypt4gh encrypt --recipient_pk" in error["hint"]
    if code in ("invalid_public_key", "invalid_secret_key"):
        assert "crypt4gh-keygen" in error["hint"]
    # the one-line form carries the same hint after the message
    report_levere(raised.value, as_json=False)
    line = " ".join(capsys.readouterr().err.split())  # rich may wrap it to the terminal
    assert raised.value.message in line and " ".join(error["hint"].split()) in line


# --- against the service --------------------------------------------------------------------------


@pytest.fixture
def env(ctx: Context, tmp_path: Path) -> Iterator[Env]:
    yield from make_env(ctx, tmp_path)


def _as(env: Env, tmp_path: Path, email: str) -> dict[str, str]:
    with env.ctx.tx() as session:
        user = accounts.get_user_by_email(session, email)
    return cli_env(tmp_path, env.service.url, token_for(env.ctx, user), email.split("@")[0])


def _helpdesk(env: Env, tmp_path: Path) -> dict[str, str]:
    return _as(env, tmp_path, "helpdesk@levere.test")


def _json_error(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode != 0 and result.stdout == "", result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    error: dict[str, Any] = json.loads(lines[0])
    assert error["exit_code"] == result.returncode
    return error


def test_permission_errors_say_who_can(env: Env, tmp_path: Path) -> None:
    member = _as(env, tmp_path, "member@uib.example.org")
    denied = levere(member, "sync", env.project)
    assert denied.returncode == 3
    assert one_line_error(denied) == (
        f"error: you are not allowed to start a sync in project {env.project} (only the helpdesk can)"
    )
    denied = levere(member, "free", env.project, "RUN1")
    assert "(project admins and the helpdesk can)" in one_line_error(denied)
    denied = levere(env.member, "applications", "approve", "1")
    assert "not allowed to review application 1 (only the helpdesk can)" in one_line_error(denied)
    error = _json_error(levere(member, "--json", "sync", env.project))
    assert error["error"] == "access_denied" and error["details"]["allowed"] == ["helpdesk"]


def test_a_member_sees_a_job_by_its_id_alone(env: Env, tmp_path: Path) -> None:
    helpdesk_user = _helpdesk(env, tmp_path)
    with env.ctx.tx() as session:
        helpdesk = accounts.get_user_by_email(session, "helpdesk@levere.test")
    job = sync.request_sync(env.ctx, helpdesk, env.project)
    member = _as(env, tmp_path, "member@uib.example.org")
    shown = levere(member, "jobs", "show", job.id)
    assert shown.returncode == 0, shown.stderr
    assert f"sync of {env.project}" in shown.stdout
    every = scrub.request_verify(env.ctx, helpdesk, None)
    denied = levere(member, "jobs", "show", every.id)
    assert one_line_error(denied) == (
        "error: you are not allowed to see jobs that span every project (only the helpdesk can)"
    )
    assert levere(helpdesk_user, "jobs", "show", every.id).returncode == 0


def test_a_refused_free_tells_who_syncs_and_keeps_its_code(env: Env, tmp_path: Path) -> None:
    assert levere(env.member, "projects", "set", env.project, "--sync-mode", "manual").returncode == 0
    run = make_run(tmp_path / "RUN1", {"a.fastq": 2048}, checksum_file=False)
    assert levere(env.staff, "deliver", env.project, str(run), "--no-checksum-file").returncode == 0
    refused = levere(env.member, "free", env.project, "RUN1")
    line = one_line_error(refused)
    assert refused.returncode == 1
    assert f"1 of 1 file in {env.project} are not safely on long-term storage yet" in line
    assert (
        f"only the helpdesk can sync a project to long-term storage: ask them to, with 'levere sync {env.project}'"
        in line
    )
    error = _json_error(levere(env.member, "free", env.project, "RUN1", "--json"))
    assert error["error"] == "not_synced" and error["details"]["files"] == ["RUN1/a.fastq"]
    assert "levere sync" not in error["message"] and f"levere sync {env.project}" in error["hint"]


def test_one_file_is_one_file(env: Env, tmp_path: Path) -> None:
    run = make_run(tmp_path / "ONE", {"only.fastq": 4096}, checksum_file=False)
    delivered = levere(env.staff, "deliver", env.project, str(run), "--no-checksum-file")
    assert delivered.returncode == 0, delivered.stderr
    assert "1 file, 4.0 KiB in" in delivered.stdout and "1 files" not in delivered.stdout
    listed = levere(env.member, "ls", env.project, "ONE")
    assert "1 file, 4.0 KiB" in listed.stdout
    got = levere(env.member, "download", env.project, "ONE", "--to", str(tmp_path / "dl"))
    assert got.returncode == 0 and "1 file (4.0 KiB)" in got.stdout, got.stderr


def test_applications_already_submitted_and_withdrawn(env: Env, tmp_path: Path, mailbox: Mailbox) -> None:
    staff, pi = env.staff, env.member
    helpdesk = _helpdesk(env, tmp_path)
    # a draft made by mistake: its author withdraws it
    draft = json.loads(
        levere(staff, "--json", "apply", "--title", "Oops", "--pi", "pi@uib.example.org").stdout
    )
    gone = levere(staff, "applications", "withdraw", str(draft["number"]))
    assert gone.returncode == 0, gone.stderr
    assert f"application {draft['number']} withdrawn" in gone.stdout
    shown = json.loads(levere(pi, "applications", "show", str(draft["number"]), "--json").stdout)
    assert shown["state"] == "withdrawn"
    again = levere(staff, "applications", "withdraw", str(draft["number"]))
    assert one_line_error(again) == f"error: application {draft['number']} is already withdrawn"
    # submitted twice: said plainly
    form = {
        "--data-ownership": "UiB",
        "--funding-source": "RCN",
        "--description": "x",
        "--facility": "norseq-oslo",
    }
    flags = [part for pair in form.items() for part in pair]
    made = json.loads(
        levere(
            pi, "--json", "apply", "--title", "Real", *flags, "--area-quota", "1G", "--longterm-quota", "2G"
        ).stdout
    )
    number = str(made["number"])
    assert levere(pi, "applications", "submit", number).returncode == 0
    twice = levere(pi, "applications", "submit", number)
    assert one_line_error(twice) == f"error: application {number} is already submitted"
    assert (
        _json_error(levere(pi, "applications", "submit", number, "--json"))["error"] == "invalid_transition"
    )
    # an outsider may not withdraw it; the PI may, and the helpdesk is told it left the queue
    assert "(its PI and whoever drafted it can)" in one_line_error(
        levere(helpdesk, "applications", "withdraw", number)
    )
    assert levere(pi, "applications", "withdraw", number).returncode == 0
    assert "withdrew application" in str(
        mailbox.wait_for("helpdesk@levere.test", f"Application {number} was withdrawn")
    )
    queue = json.loads(levere(helpdesk, "--json", "applications", "list", "--queue").stdout)
    assert number not in {str(a["number"]) for a in queue}
    # a decided application stays decided
    refused = levere(env.member, "applications", "withdraw", "1")
    assert one_line_error(refused) == "error: application 1 is approved and cannot be withdrawn"
    with env.ctx.tx() as session:
        actions = list(session.execute(select(AuditEvent.action)).scalars())
    assert actions.count("application.withdrawn") == 2


def test_notifications_show_their_subject_and_text(env: Env, tmp_path: Path) -> None:
    listed = levere(env.member, "account", "notifications")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    subjects = [line for line in lines if "UTC  " in line]
    assert subjects and all("  [levere] " in line for line in subjects), listed.stdout
    assert "Project identifier: " + env.project in listed.stdout  # the approval's text, indented
    assert any(line.startswith("    ") for line in lines)


# --- manifests --------------------------------------------------------------------------------------


def test_a_manifest_never_overwrites_the_runs_own_checksum_file(env: Env, tmp_path: Path) -> None:
    run = make_run(tmp_path / "RUN7", {"a.fastq": 3000, "lane2/b.fastq": 5000})
    own = (run / "md5sum.txt").read_bytes()
    assert levere(env.staff, "deliver", env.project, str(run)).returncode == 0
    got = levere(env.member, "download", env.project, "RUN7", "--to", str(tmp_path / "dl"))
    assert got.returncode == 0, got.stderr
    folder = tmp_path / "dl" / "RUN7"

    def manifest(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "levere.cli.main", "manifest", env.project, "RUN7", *args],
            env=env.member, cwd=folder, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    refused = manifest("-o", "md5sum.txt")
    assert refused.returncode == 1
    assert "md5sum.txt is already there and was left alone" in one_line_error(refused)
    assert (folder / "md5sum.txt").read_bytes() == own
    assert not list(folder.glob(".*.part"))

    written = manifest()
    assert written.returncode == 0, written.stderr
    assert "written to RUN7.levere-md5sum.txt" in written.stderr
    for checksums in ("md5sum.txt", "RUN7.levere-md5sum.txt"):
        check = subprocess.run(
            ["md5sum", "--quiet", "-c", checksums], cwd=folder, capture_output=True, text=True
        )
        assert check.returncode == 0, check.stdout + check.stderr
    first = (folder / "RUN7.levere-md5sum.txt").read_bytes()
    assert "md5sum.txt" in first.decode()  # the run's own file is listed, and unchanged

    assert "left alone" in one_line_error(manifest())
    (folder / "RUN7.levere-md5sum.txt").write_bytes(b"stale")
    forced = manifest("--force")
    assert forced.returncode == 0 and (folder / "RUN7.levere-md5sum.txt").read_bytes() == first

    elsewhere = tmp_path / "manifests"
    elsewhere.mkdir()
    into = manifest("--format", "sha256sum", "-o", str(elsewhere), "--json")
    assert json.loads(into.stdout)["written_to"] == str(elsewhere / "RUN7.levere-sha256sum.txt")
    sha = hashlib.sha256((run / "a.fastq").read_bytes()).hexdigest()
    assert f"{sha}  a.fastq" in (elsewhere / "RUN7.levere-sha256sum.txt").read_text()
    to_screen = manifest("-o", "-")
    assert to_screen.stdout.encode() == first


def test_a_token_that_no_longer_works_says_to_sign_in_again(env: Env) -> None:
    forged = levere(env.member | {"LEVERE_TOKEN": "lev_0000_nonsense"}, "projects", "list")
    assert forged.returncode == 3
    assert one_line_error(forged) == (
        "error: the token is not valid; sign in again with 'levere login --email YOUR-EMAIL'"
    )
    error = _json_error(
        levere(env.member | {"LEVERE_TOKEN": "lev_0000_nonsense"}, "projects", "list", "--json")
    )
    assert error["error"] == "authentication_failed" and error["details"] == {"reason": "token_invalid"}
    assert error["message"] == "the token is not valid" and "levere login" in error["hint"]
