"""A sensitive project with its shared disk, and the facility staff's tokens, for the tests of
uploads into the secure zone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyotp
from sqlalchemy import select, update

from levere.context import Context
from levere.db.models import ApiToken, SharedDisk, StoredFile, User, utcnow
from levere.domain.tiers import Tier
from levere.services import secure, secure_disks
from levere.services.accounts import sha256
from levere.transfer.wire import encode_metadata
from tests.helpers import PASSWORD, World, auth, basic_world, provisioned_project, token_for
from tests.plaintext_scan import find_windows

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {"Content-Type": "application/offset+octet-stream"}


def stepped_up(ctx: Context, token: str) -> str:
    """Mark ``token`` as coming from a sign-in that proved a second factor."""
    with ctx.tx() as session:
        session.execute(
            update(ApiToken).where(ApiToken.secret_hash == sha256(token)).values(second_factor=True)
        )
    return token


@dataclass
class Zone:
    """A sensitive project (users' secure project p1234), the facility's secure project p11, and an
    open shared disk between them; ``staff`` has a token with a second factor, ``plain`` one without."""

    ctx: Context
    world: World
    project: str
    disk: str
    staff: dict[str, str]
    plain: dict[str, str]

    def open_delivery(self, http: Any, name: str = "RUN1", **extra: Any) -> Any:
        return http.post(
            f"/api/projects/{self.project}/deliveries",
            json={"name": name, "disk": self.disk, **extra},
            headers=self.staff,
        )

    def create(self, http: Any, delivery: str, path: str, length: int, headers: dict[str, str] | None = None,
               **meta: str) -> Any:  # fmt: skip
        metadata = {"project": self.project, "delivery": delivery, "path": path, **meta}
        return http.post(
            "/api/tus/",
            headers={**(headers or self.staff), **TUS, "Upload-Length": str(length),
                     "Upload-Metadata": encode_metadata(metadata)},
        )  # fmt: skip

    def patch(self, http: Any, url: str, offset: int, data: bytes) -> Any:
        return http.patch(
            url, content=data, headers={**self.staff, **TUS, **OCTETS, "Upload-Offset": str(offset)}
        )

    def disk_row(self) -> SharedDisk:
        with self.ctx.tx() as session:
            return session.execute(select(SharedDisk).where(SharedDisk.name == self.disk)).scalar_one()

    def set_disk(self, **values: object) -> None:
        with self.ctx.tx() as session:
            session.execute(update(SharedDisk).where(SharedDisk.name == self.disk).values(**values))

    def files(self) -> list[StoredFile]:
        with self.ctx.tx() as session:
            return list(session.execute(select(StoredFile).order_by(StoredFile.path)).scalars())


def make_zone(ctx: Context, quota: int | None = None) -> Zone:
    world = basic_world(ctx)
    project = provisioned_project(ctx, world, sensitive=True, secure_project_id="p1234")
    secure.register(ctx, world.helpdesk, "p11", facility=world.facility.name)
    disk = secure_disks.create(
        ctx, world.helpdesk, facility_project="p11", users_project="p1234",
        ends_at=utcnow() + timedelta(days=30), quota_bytes=quota,
    ).name  # fmt: skip
    staff = auth(stepped_up(ctx, token_for(ctx, world.staff)))
    plain = auth(token_for(ctx, world.staff))
    return Zone(ctx, world, project, disk, staff, plain)


def stored_bytes(ctx: Context, tier: Tier = Tier.SECURE) -> list[tuple[Path, bytes]]:
    """Every file under the tier's local root (published objects and staging alike)."""
    root = ctx.settings.tier_spec(tier.value).root  # type: ignore[union-attr]
    return [(p, p.read_bytes()) for p in sorted(Path(root).rglob("*")) if p.is_file()]


def has_window(haystack: bytes, plaintext: bytes) -> bool:
    """Whether any 32-byte stretch of ``plaintext`` occurs in ``haystack``."""
    return bool(find_windows(haystack, plaintext))


def sign_in_with_totp(ctx: Context, cli: Any, who: str, user: User) -> None:
    """Turn on levere's TOTP for ``user`` and sign in on the CLI as ``who`` with a one-time code."""
    secret = pyotp.random_base32()
    with ctx.tx() as session:
        row = session.get(User, user.id)
        assert row is not None
        row.totp_secret, row.totp_enabled = secret, True
    cli.ok(who, "login", "--email", user.email, "--totp", pyotp.TOTP(secret).now(), password=PASSWORD)
