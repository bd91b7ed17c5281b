"""`make demo`: the whole delivery process on the embedded default (SQLite + local folders).

It starts a real SMTP sink and `levere serve` on free loopback ports, then plays every person with the
`levere` CLI exactly as they would type it: the helpdesk operator, a facility's staff member, a PI and a
new project member. Everything lives in `.demo/` (made afresh on each run) and the service is stopped
at the end, whatever happens.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pyotp
from aiosmtpd.controller import Controller
from rich.console import Console
from rich.rule import Rule

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
LEVERE = str(Path(sys.executable).parent / "levere")
console = Console(highlight=False, width=120)

HELPDESK = "helpdesk@elixir.example.no"
STAFF = "kari@norseq.example.no"
PI = "ola.pi@uib.example.no"
MEMBER = "ingrid@uib.example.no"
VIEWER = "collaborator@ntnu.example.no"
NAMES = {STAFF: "Kari Sekvens", PI: "Ola Nordmann", MEMBER: "Ingrid Forsker"}
PASSWORDS = {
    HELPDESK: "helpdesk-secret-1",
    STAFF: "staff-secret-12",
    PI: "pi-secret-1234",
    MEMBER: "member-secret-1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Inbox:
    """A real SMTP server on loopback that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        with self.lock:
            self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def wait_for(self, to: str, subject_part: str, timeout: float = 20) -> Message:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for message in self.messages:
                    if to in message["To"] and subject_part in " ".join(str(message["Subject"]).split()):
                        return message
            time.sleep(0.1)
        raise SystemExit(f"demo: no e-mail to {to} about {subject_part!r} arrived")


def body(message: Message) -> str:
    payload = message.get_payload(decode=True)
    return payload.decode() if isinstance(payload, bytes) else str(payload)


def link_in(message: Message) -> str:
    found = re.search(r"https?://\S+/invite/\S+", body(message))
    if not found:
        raise SystemExit(f"demo: no invitation link in {message['Subject']!r}")
    return found.group(0)


class Demo:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.inbox = Inbox()
        self.smtp_port = free_port()
        self.server: subprocess.Popen[bytes] | None = None
        self.env = {
            **os.environ,
            "LEVERE_DATA_DIR": str(DEMO / "data"),
            "LEVERE_PUBLIC_URL": self.url,
            "LEVERE_SMTP__ENABLED": "true",
            "LEVERE_SMTP__HOST": "127.0.0.1",
            "LEVERE_SMTP__PORT": str(self.smtp_port),
            "LEVERE_SMTP__SENDER": "levere@elixir.example.no",
            "LEVERE_URL": self.url,
            "LEVERE_SECURE__MASTER_KEY_FILE": str(DEMO / "master.keys"),
            "COLUMNS": "120",
        }
        for key in ("LEVERE_DATABASE_URL", "LEVERE_TOKEN", "LEVERE_CONFIG_FILE"):
            self.env.pop(key, None)

    # --- running commands as a person ------------------------------------------------------------
    def levere(
        self, who: str, *args: str, show: bool = True, password: str | None = None, check: bool = True
    ) -> str:
        env = self.env | {"LEVERE_CLI_CONFIG": str(DEMO / "cli" / f"{who}.toml")}
        if password:
            env["LEVERE_PASSWORD"] = password
        if show:
            self.prompt(who, ("LEVERE_PASSWORD=… " if password else "") + _command(args))
        # from the repository's folder, so that the relative paths shown are the ones used
        result = subprocess.run(
            [LEVERE, *args], env=env, cwd=ROOT, capture_output=True, text=True, check=False
        )
        if show and result.stdout.strip():
            console.out(result.stdout.rstrip(), highlight=False)
        if result.returncode != 0 and check:
            console.print(result.stderr.rstrip(), markup=False)
            raise SystemExit(f"demo: 'levere {' '.join(args)}' failed with exit code {result.returncode}")
        if show and result.stderr.strip():
            console.print(result.stderr.rstrip(), markup=False, style="dim")
        return result.stdout

    def json(self, who: str, *args: str, repeated: str = "") -> Any:
        """A command whose JSON answer the demo reads; shown once with what repeats it, if it repeats."""
        if repeated:
            self.prompt(who, f"{_command(['--json', *args])}   [dim]# {repeated}[/dim]")
        return json.loads(self.levere(who, "--json", *args, show=False))

    def prompt(self, who: str, command: str) -> None:
        """A command as the person types it (the demo shows every command it runs)."""
        console.print(f"[bold cyan]{who}$[/bold cyan] {command}", soft_wrap=True)  # one line, as typed

    def step(self, title: str) -> None:
        console.print()
        console.print(Rule(f"[bold]{title}"))

    # --- the service -----------------------------------------------------------------------------
    def start(self) -> None:
        shutil.rmtree(DEMO, ignore_errors=True)
        (DEMO / "cli").mkdir(parents=True)
        self.smtp = Controller(self.inbox, hostname="127.0.0.1", port=self.smtp_port)
        self.smtp.start()
        self.step("The helpdesk sets up levere (SQLite database and local storage in .demo/data)")
        self.levere(
            "helpdesk", "init", "--email", HELPDESK, "--name", "Helga Helpdesk", password=PASSWORDS[HELPDESK]
        )
        if _has_command("master-key"):
            self.levere("helpdesk", "master-key", "new", ".demo/master.keys")
        log = open(DEMO / "server.log", "wb")  # noqa: SIM115 - closed with the process
        self.prompt(
            "helpdesk", f"levere serve --port {self.port} --log-level warning > .demo/server.log 2>&1 &"
        )
        self.server = subprocess.Popen(
            [LEVERE, "serve", "--port", str(self.port), "--log-level", "warning"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/api/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if self.server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"demo: levere serve did not start; see {DEMO / 'server.log'}") from None
                time.sleep(0.2)
        console.print(f"levere is serving on {self.url}")

    def stop(self) -> None:
        """Stop the server as systemd would (SIGTERM) and require a clean exit within 10 s."""
        try:
            if self.server is not None and self.server.poll() is None:
                self.server.send_signal(signal.SIGTERM)
                try:
                    code = self.server.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.server.kill()
                    self.server.wait()
                    raise SystemExit(
                        f"demo: levere serve did not stop within 10 s of SIGTERM; see {DEMO / 'server.log'}"
                    ) from None
                if code != 0:
                    raise SystemExit(
                        f"demo: levere serve exited with {code} on SIGTERM; see {DEMO / 'server.log'}"
                    )
        finally:
            if hasattr(self, "smtp"):
                self.smtp.stop()

    # --- the story -------------------------------------------------------------------------------
    def onboard(self, who: str, email: str, subject_part: str) -> None:
        link = link_in(self.inbox.wait_for(email, subject_part))
        self.levere(who, "account", "accept-invite", link, "--name", NAMES[email], password=PASSWORDS[email])
        self.levere(who, "login", "--email", email, password=PASSWORDS[email])

    def run(self) -> None:
        self.start()
        self.step("The helpdesk operator signs in and sets up two-factor sign-in (required for the helpdesk)")
        self.levere("helpdesk", "login", "--email", HELPDESK, password=PASSWORDS[HELPDESK])
        uri = _found(r"otpauth://\S+", self.levere("helpdesk", "account", "totp-enrol"), "an otpauth:// link")
        secret = urllib.parse.parse_qs(urllib.parse.urlparse(uri).query)["secret"][0]
        console.print("(the authenticator app would now show codes; the demo computes them)", style="dim")
        totp = pyotp.TOTP(secret)
        self.levere("helpdesk", "account", "totp-confirm", totp.now())
        # a code is good once, so sign in with the next one (levere accepts one step of clock drift)
        next_code = totp.at(time.time() + 30)
        self.levere(
            "helpdesk", "login", "--email", HELPDESK, "--totp", next_code, password=PASSWORDS[HELPDESK]
        )

        self.step("The helpdesk registers the NorSeq Oslo node and its staff member")
        self.levere("helpdesk", "facilities", "create", "norseq-oslo", "--display-name", "NorSeq Oslo node",
                    "--contact", "seq@norseq.example.no")  # fmt: skip
        self.levere("helpdesk", "facilities", "add-staff", "norseq-oslo", STAFF, "--name", "Kari Sekvens")
        self.levere("helpdesk", "users", "create", PI, "--name", NAMES[PI])
        self.step("Kari and Ola set their passwords from the e-mailed links and sign in")
        self.onboard("staff", STAFF, "Your levere account")
        self.onboard("pi", PI, "Your levere account")

        self.step("Kari fills in the application with the PI (from a file)")
        form = DEMO / "application.toml"
        form.write_text(
            "[application]\n"
            'title = "Salmon lice transcriptomes across life stages"\n'
            f'pi_email = "{PI}"\n'
            'data_ownership = "University of Bergen, Department of Biological Sciences"\n'
            'funding_source = "Research Council of Norway"\n'
            'grant_id = "RCN-301234"\n'
            'description = "RNA-seq of Lepeophtheirus salmonis at six life stages to map moulting genes."\n'
            'facility = "norseq-oslo"\n'
            'quota_area_bytes = "50G"\n'
            'quota_longterm_bytes = "200G"\n'
            "sensitive = false\n"
            f'members = ["{MEMBER}:member", "{VIEWER}:viewer"]\n'
        )
        self.prompt("staff", f"cat {form.relative_to(ROOT)}")
        console.print(form.read_text(), style="dim", markup=False)
        saved = self.levere("staff", "apply", "--file", str(form.relative_to(ROOT)))
        number = _found(r"application (\d+) saved as a draft", saved, "the application's number", group=1)
        self.levere("staff", "applications", "list")

        self.step("Ola checks the draft and submits it (which confirms it)")
        self.inbox.wait_for(PI, f"confirm application {number}")
        self.levere("pi", "applications", "show", number)
        self.levere("pi", "applications", "submit", number)

        self.step("The helpdesk reviews the queue and approves with a smaller working-area quota")
        self.levere("helpdesk", "applications", "list", "--queue")
        approved = self.levere("helpdesk", "applications", "approve", number, "--area-quota", "20G",
                               "--comment", "20G to start with; ask for more when needed")  # fmt: skip
        identifier = _found(r"project (LEV-\d{4}-\d+)", approved, "the project's identifier", group=1)
        self.levere("helpdesk", "projects", "show", identifier)

        self.step("Ingrid, a new member, follows her invitation and finds the project")
        self.onboard("member", MEMBER, f"joined project {identifier}")
        self.levere("member", "projects", "list")
        self.identifier = identifier

        self.deliver_and_download()
        self.longterm()
        self.sensitive()

        self.step("The audit log: every change, hash-chained")
        self.levere("helpdesk", "audit", "list", "--limit", "12")
        self.levere("helpdesk", "audit", "verify")
        self.show_mail()
        console.print()
        console.print(
            f"[bold green]Demo finished.[/bold green] Data, database and logs are in {DEMO.relative_to(ROOT)}/"
        )
        self.how_to_open_the_portal()

    def how_to_open_the_portal(self) -> None:
        """The portal on the demo's data: the same command, and the people to sign in as."""
        folder = DEMO.relative_to(ROOT)
        console.print()
        console.print("[bold]To look at the demo's data in the web portal[/bold], start levere on it again:")
        console.print(
            f"  LEVERE_DATA_DIR={folder}/data .venv/bin/levere serve --port {self.port}", markup=False
        )
        console.print(f"and open {self.url}/portal/ in a browser. Sign in as", markup=False)
        for email in (STAFF, PI, MEMBER):
            console.print(f"  {email:<28} password {PASSWORDS[email]}", markup=False)
        console.print(
            f"or as {HELPDESK} (password {PASSWORDS[HELPDESK]}), with a code from an authenticator app "
            "holding the secret of the otpauth:// link shown above. Ctrl-C stops the server.",
            markup=False,
        )

    def deliver_and_download(self) -> None:
        """Grows with the deliveries work: the facility uploads a run, a member downloads it."""
        if not _has_command("deliver"):
            return
        from demo_run import deliver_and_download  # scripts/demo_run.py

        deliver_and_download(self)

    def longterm(self) -> None:
        if not _has_command("sync"):
            return
        from demo_run import longterm

        longterm(self)

    def sensitive(self) -> None:
        """Human data through the secure zone: shared disk, encryption at rest, QC, release."""
        if not _has_command("secure"):
            return
        from demo_secure import sensitive  # scripts/demo_secure.py

        sensitive(self, STAFF, PI, HELPDESK, PASSWORDS)

    def show_mail(self) -> None:
        self.step(f"E-mails levere sent ({len(self.inbox.messages)}), as received by the SMTP server")
        with self.inbox.lock:
            for message in self.inbox.messages:
                subject = " ".join(str(message["Subject"]).split())
                console.print(f"  to {message['To']:<34} {subject}", markup=False)
            welcome = next(
                (m for m in self.inbox.messages if MEMBER in m["To"] and "joined" in m["Subject"]), None
            )
        if welcome is not None:
            console.print()
            console.print(f"[bold]The invitation Ingrid received:[/bold] {welcome['Subject']}")
            console.print(body(welcome), markup=False, style="dim")


def _has_command(name: str) -> bool:
    import typer.main

    from levere.cli.main import app

    return name in typer.main.get_command(app).commands  # type: ignore[attr-defined]


def _quote(arg: str) -> str:
    return f"'{arg}'" if (" " in arg or not arg) else arg


def _command(args: Any) -> str:
    return "levere " + " ".join(_quote(a) for a in args)


def _found(pattern: str, output: str, what: str, group: int = 0) -> str:
    """What a command printed that the next command needs, as a person would read it off the screen."""
    match = re.search(pattern, output)
    if match is None:
        raise SystemExit(f"demo: the command's output did not show {what}:\n{output}")
    return match.group(group)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    demo = Demo()
    try:
        demo.run()
    finally:
        demo.stop()


if __name__ == "__main__":
    main()
