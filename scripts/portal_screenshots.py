"""Screenshots of the portal's main pages, on a wide and a narrow screen, into docs/screenshots/.

It makes a small world through the services (a facility, a PI, a helpdesk operator, an approved
project with a delivered run, an application waiting for review, and a sensitive project with a
shared disk holding an analysed, sealed delivery) in a throwaway folder, starts
`levere serve` on it on a free loopback port, and photographs each page in Debian's Chromium
(scripts/install-test-deps.sh) through Playwright. Run it with `.venv/bin/python scripts/portal_screenshots.py`.
"""

from __future__ import annotations

import io
import os
import random
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pyotp
from playwright.sync_api import Page, sync_playwright
from sqlalchemy import select

from levere.config import SecureSettings, Settings, SmtpSettings
from levere.context import Context
from levere.crypt4gh import MasterKeys
from levere.db.migrate import upgrade
from levere.db.models import Delivery, User, utcnow
from levere.domain.applications import ApplicationForm, RequestedMember
from levere.domain.roles import ProjectRole, UserKind
from levere.services import (
    accounts,
    applications,
    batches,
    deliveries,
    sealing,
    secure,
    secure_disks,
    zone_analysis,
    zone_store,
)
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


def make_world(ctx: Context) -> tuple[str, str, str, str]:
    """The project's identifier, the helpdesk operator's and the facility staff's TOTP secrets,
    and the shared disk's name."""
    with ctx.tx() as session:
        desk = accounts.create_user(session, None, "helga@elixir.example.no", kind=UserKind.HELPDESK,
                                    name="Helga Helpdesk", password=PASSWORD)  # fmt: skip
        desk.totp_secret, desk.totp_enabled = pyotp.random_base32(), True
        secret = desk.totp_secret
        seq = accounts.create_facility(session, desk, "norseq-oslo", "NorSeq Oslo", "seq@norseq.example.no")
        staff = accounts.create_user(session, desk, "kari@norseq.example.no", kind=UserKind.FACILITY,
                                     facility=seq, name="Kari Sekvens", password=PASSWORD)  # fmt: skip
        staff.totp_secret, staff.totp_enabled = pyotp.random_base32(), True
        staff_secret = staff.totp_secret
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
    return project.identifier, secret, staff_secret, zone_world(ctx, desk, staff, form)


def zone_world(ctx: Context, desk: User, staff: User, form: Callable[[str], ApplicationForm]) -> str:
    """A sensitive project, its users' secure project, the facility's, a shared disk between them
    and a sealed, analysed delivery on it (files stored as the zone stores them); the disk's name."""
    sensitive = replace(form("Hereditary heart disease exomes"), sensitive=True, secure_project_id="p1234")  # fmt: skip
    made = applications.create(ctx, staff, sensitive)
    with ctx.tx() as session:
        pi = accounts.get_user_by_email(session, sensitive.pi_email)
    applications.submit(ctx, pi, str(made.number))
    _, project = applications.approve(ctx, desk, str(made.number))
    secure.register(ctx, desk, "p11", facility="norseq-oslo")
    ends = utcnow() + timedelta(days=30)
    disk = secure_disks.create(ctx, desk, facility_project="p11", users_project="p1234", ends_at=ends).name
    run = "231002_NB501234_0051_AHEART"
    deliveries.open_delivery(ctx, staff, project.identifier, run, disk=disk, second_factor=True)
    with ctx.tx() as session:
        delivery = session.execute(select(Delivery).where(Delivery.name == run)).scalar_one()
        for sample in (1, 2):
            rng = random.Random(sample)
            reads = b"".join(
                f"@r{n}\n{''.join(rng.choices('ACGT', k=96))}\n+\n{'I' * 90}{'5' * 6}\n".encode()
                for n in range(2000 * sample)
            )
            zone_store.store_zone_file(
                ctx, session, delivery, f"Heart{sample:02d}_S{sample}_R1_001.fastq", [reads]
            )
    sealing.seal(ctx, staff, project.identifier, run)
    job = zone_analysis.request_analysis(ctx, staff, disk, run)
    zone_analysis.run_analysis(ctx, job.id)
    return disk


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
        keys = data / "master.keys"
        keys.write_text(MasterKeys.new_line("screenshots-1"))
        keys.chmod(0o600)
        settings = Settings(mode="development", data_dir=data, database_url=url_db, queue_url="memory",
                            smtp=SmtpSettings(enabled=False),
                            secure=SecureSettings(master_key_file=keys))  # fmt: skip
        ctx = Context.build(settings)
        try:
            identifier, secret, staff_secret, disk = make_world(ctx)
        finally:
            ctx.close()
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEVERE_")} | {
            "LEVERE_DATA_DIR": str(data), "LEVERE_DATABASE_URL": url_db, "LEVERE_QUEUE_URL": "memory",
            "LEVERE_SMTP__ENABLED": "false", "LEVERE_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "LEVERE_SECURE__MASTER_KEY_FILE": str(keys),
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
            shoot(f"http://127.0.0.1:{port}", identifier, secret, staff_secret, disk)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=15)
    print(f"portal_screenshots: pictures in {OUT.relative_to(ROOT)}/")
    return 0


def shoot(base: str, identifier: str, secret: str, staff_secret: str, disk: str) -> None:
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
            staff = browser.new_context(base_url=base, viewport=viewport).new_page()
            sign_in(staff, "kari@norseq.example.no", pyotp.TOTP(staff_secret).at(time.time() + 30 * i))
            zone_run = f"/portal/zone/disks/{disk}/deliveries/231002_NB501234_0051_AHEART"
            for name, url in (("disk", f"/portal/zone/disks/{disk}"), ("release", f"{zone_run}/release")):
                staff.goto(url)
                staff.screenshot(path=OUT / f"{name}-{screen}.png", full_page=True)
        browser.close()


if __name__ == "__main__":
    raise SystemExit(main())
