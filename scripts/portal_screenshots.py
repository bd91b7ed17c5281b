"""Screenshots of the portal's main pages, on a wide and a narrow screen, into docs/screenshots/.

It makes a small world through the services (a facility, a PI, a helpdesk operator, an approved
project with a delivered run, and an application waiting for review) in a throwaway folder, starts
`levere serve` on it on a free loopback port, and photographs each page in Debian's Chromium
(scripts/install-test-deps.sh) through Playwright. Run it with `.venv/bin/python scripts/portal_screenshots.py`.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

import pyotp
from playwright.sync_api import Page, sync_playwright

from levere.config import Settings, SmtpSettings
from levere.context import Context
from levere.db.migrate import upgrade
from levere.domain.applications import ApplicationForm, RequestedMember
from levere.domain.roles import ProjectRole, UserKind
from levere.services import accounts, applications, batches, deliveries
from levere.transfer.pipe import ListSource

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
PASSWORD = "screenshot password"
SCREENS = {"wide": {"width": 1280, "height": 800}, "narrow": {"width": 390, "height": 844}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_world(ctx: Context) -> tuple[str, str]:
    """The project's identifier and the helpdesk operator's TOTP secret."""
    with ctx.tx() as session:
        desk = accounts.create_user(session, None, "helga@elixir.example.no", kind=UserKind.HELPDESK,
                                    name="Helga Helpdesk", password=PASSWORD)  # fmt: skip
        desk.totp_secret, desk.totp_enabled = pyotp.random_base32(), True
        secret = desk.totp_secret
        seq = accounts.create_facility(session, desk, "norseq-oslo", "NorSeq Oslo", "seq@norseq.example.no")
        staff = accounts.create_user(session, desk, "kari@norseq.example.no", kind=UserKind.FACILITY,
                                     facility=seq, name="Kari Sekvens", password=PASSWORD)  # fmt: skip
        pi = accounts.create_user(
            session, desk, "ola.pi@uib.example.no", name="Ola Nordmann", password=PASSWORD
        )

    def form(title: str) -> ApplicationForm:
        return ApplicationForm(
            title=title, pi_email=pi.email, data_ownership="University of Bergen",
            funding_source="Research Council of Norway", grant_id="RCN-301234",
            description="Whole-genome resequencing of Atlantic cod from twelve fjords.",
            facility="norseq-oslo", quota_area_bytes=2 * 10**12, quota_longterm_bytes=4 * 10**12,
            members=[RequestedMember("ingrid@uib.example.no", ProjectRole.MEMBER),
                     RequestedMember("collaborator@ntnu.example.no", ProjectRole.VIEWER)],
        )  # fmt: skip

    first = applications.create(ctx, staff, form("Atlantic cod population genomics"))
    applications.submit(ctx, pi, str(first.number))
    _, project = applications.approve(ctx, desk, str(first.number))
    waiting = applications.create(ctx, staff, form("Salmon louse transcriptomes"))
    applications.submit(ctx, pi, str(waiting.number))
    deliveries.open_delivery(ctx, staff, project.identifier, "230914_NB501234_0042_AHXYZ")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for lane in (1, 2):
            for sample in range(1, 7):
                for read in (1, 2):
                    data = b"@r\nACGTACGT\n+\nIIIIIIII\n" * (200 * sample)
                    info = tarfile.TarInfo(f"Fjord{sample:02d}_S{sample}_L00{lane}_R{read}_001.fastq.gz")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    batches.ingest(ctx, staff, project.identifier, "230914_NB501234_0042_AHXYZ", ListSource([out.getvalue()]))
    return project.identifier, secret


def sign_in(page: Page, email: str, code: str = "") -> None:
    page.goto("/portal/sign-in")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    if code:
        page.get_by_label("One-time code").fill(code)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/portal/")


def main() -> int:
    if not Path(CHROMIUM).exists():
        print(
            f"portal_screenshots: no browser at {CHROMIUM}; run scripts/install-test-deps.sh", file=sys.stderr
        )
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="levere-screenshots-") as tmp:
        data = Path(tmp)
        url_db = f"sqlite:///{data}/levere.db"
        upgrade(url_db)
        settings = Settings(mode="development", data_dir=data, database_url=url_db, queue_url="memory",
                            smtp=SmtpSettings(enabled=False))  # fmt: skip
        ctx = Context.build(settings)
        try:
            identifier, secret = make_world(ctx)
        finally:
            ctx.close()
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEVERE_")} | {
            "LEVERE_DATA_DIR": str(data), "LEVERE_DATABASE_URL": url_db, "LEVERE_QUEUE_URL": "memory",
            "LEVERE_SMTP__ENABLED": "false", "LEVERE_PUBLIC_URL": f"http://127.0.0.1:{port}",
        }  # fmt: skip
        server = subprocess.Popen(
            [sys.executable, "-m", "levere.cli.main", "serve", "--port", str(port), "--no-worker",
             "--log-level", "warning"], env=env,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1):
                        break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        print("portal_screenshots: levere serve did not start", file=sys.stderr)
                        return 1
                    time.sleep(0.2)
            shoot(f"http://127.0.0.1:{port}", identifier, secret)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=15)
    print(f"portal_screenshots: pictures in {OUT.relative_to(ROOT)}/")
    return 0


def shoot(base: str, identifier: str, secret: str) -> None:
    run = f"/portal/projects/{identifier}/deliveries/230914_NB501234_0042_AHXYZ"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        for i, (screen, viewport) in enumerate(SCREENS.items()):
            anonymous = browser.new_context(base_url=base, viewport=viewport).new_page()
            anonymous.goto("/portal/sign-in")
            anonymous.screenshot(path=OUT / f"sign-in-{screen}.png", full_page=True)
            page = browser.new_context(base_url=base, viewport=viewport).new_page()
            sign_in(page, "ola.pi@uib.example.no")
            for name, url in (("home", "/portal/"), ("project", f"/portal/projects/{identifier}"),
                              ("delivery", run), ("application-form", "/portal/applications/new")):  # fmt: skip
                page.goto(url)
                page.screenshot(path=OUT / f"{name}-{screen}.png", full_page=True)
            desk = browser.new_context(base_url=base, viewport=viewport).new_page()
            sign_in(
                desk, "helga@elixir.example.no", pyotp.TOTP(secret).at(time.time() + 30 * i)
            )  # a code works once
            for name, url in (("review", "/portal/applications/2"), ("dashboard", "/portal/dashboard")):
                desk.goto(url)
                desk.screenshot(path=OUT / f"{name}-{screen}.png", full_page=True)
        browser.close()


if __name__ == "__main__":
    raise SystemExit(main())
