"""What the delivery tests share: a project with people in every role, the area tier on the local
backend and (when LEVERE_TEST_S3_* are set) on S3, tus and tar helpers, and a real ``levere serve``.

Test modules import the fixtures they use (``area_kind`` and ``settings`` together): the ``settings``
here overrides the suite's, putting the area tier on S3 for the ``s3`` runs.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from sqlalchemy import select

from levere.config import Settings, TierSettings
from levere.context import Context
from levere.db.models import Quota, StoredFile, Upload, User
from levere.domain.roles import ProjectRole, UserKind
from levere.domain.tiers import Tier
from levere.services import accounts, projects
from levere.storage import S3Backend, S3Spec
from levere.transfer.wire import encode_metadata
from tests.helpers import auth, basic_world, make_facility, make_user, provisioned_project
from tests.processes import stop_gracefully

MiB = 1024 * 1024
S3_ENV = ("LEVERE_TEST_S3_ENDPOINT", "LEVERE_TEST_S3_ACCESS_KEY", "LEVERE_TEST_S3_SECRET_KEY")
TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {"Content-Type": "application/offset+octet-stream"}


def s3_params() -> dict[str, str] | None:
    values = [os.environ.get(n, "") for n in S3_ENV]
    if not all(values):
        return None
    return {"endpoint_url": values[0], "access_key": values[1], "secret_key": values[2]}


def raw_s3(params: dict[str, str]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=params["endpoint_url"],
        aws_access_key_id=params["access_key"],
        aws_secret_access_key=params["secret_key"],
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


@pytest.fixture(scope="session")
def delivery_bucket() -> Iterator[str]:
    params = s3_params()
    if params is None:
        pytest.skip("S3 not configured (LEVERE_TEST_S3_*)")
    bucket = f"levere-dlv-{uuid.uuid4().hex[:12]}"
    S3Backend(bucket=bucket, **params).ensure_bucket()
    yield bucket
    client = raw_s3(params)
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for up in page.get("Uploads", []):
            client.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])
    client.delete_bucket(Bucket=bucket)


def storage_kind(request: pytest.FixtureRequest) -> str:
    """The fixture's parameter, "local" or "s3"; an "s3" run is skipped when S3 is not configured."""
    if request.param == "s3" and s3_params() is None:
        pytest.skip("S3 not configured: set LEVERE_TEST_S3_* (scripts/s3-server.sh start DIR PORT)")
    return str(request.param)


def s3_spec(request: pytest.FixtureRequest, backend_id: str) -> S3Spec:
    """A backend on the test S3 server, under a prefix of its own in the session's bucket."""
    params = s3_params()
    assert params is not None
    return S3Spec(
        type="s3",
        backend_id=backend_id,
        bucket=request.getfixturevalue("delivery_bucket"),
        prefix=f"t-{uuid.uuid4().hex[:12]}/",
        endpoint_url=params["endpoint_url"],
        access_key=params["access_key"],  # type: ignore[arg-type]
        secret_key=params["secret_key"],  # type: ignore[arg-type]
    )


@pytest.fixture(params=["local", "s3"])
def area_kind(request: pytest.FixtureRequest) -> str:
    return storage_kind(request)


@pytest.fixture
def settings(settings: Settings, area_kind: str, request: pytest.FixtureRequest) -> Settings:
    if area_kind != "s3":
        return settings
    spec = s3_spec(request, "area-s3")
    return settings.model_copy(update={"tiers": TierSettings(area=spec)})


# --- people and a project ------------------------------------------------------------------------------


@dataclass
class Crew:
    project: str
    staff: User
    tokens: dict[str, str]  # role -> token

    def headers(self, role: str = "staff") -> dict[str, str]:
        return auth(self.tokens[role])


def crew(ctx: Context, area_quota: int | None = None, **form_changes: Any) -> Crew:
    """A project with facility staff assigned, a member, a viewer, and outsiders of each kind
    (``form_changes``: more fields of the application it comes from)."""
    world = basic_world(ctx)
    from levere.domain.applications import RequestedMember

    changes: dict[str, Any] = {
        "members": [
            RequestedMember("member@uib.example.org", ProjectRole.MEMBER),
            RequestedMember("viewer@uib.example.org", ProjectRole.VIEWER),
        ]
    }
    if area_quota is not None:
        changes["quota_area_bytes"] = area_quota
    changes.update(form_changes)
    identifier = provisioned_project(ctx, world, **changes)
    other_facility = make_facility(ctx, "other-seq")
    people = {
        "staff": world.staff,
        "helpdesk": world.helpdesk,
        "admin": world.pi,
        "other_staff": make_user(ctx, "staff@other-seq.example.org", UserKind.FACILITY, other_facility, None),
        "outsider": make_user(ctx, "outsider@uib.example.org", password=None),
    }
    tokens: dict[str, str] = {}
    with ctx.tx() as session:
        for email, role in (("member@uib.example.org", "member"), ("viewer@uib.example.org", "viewer")):
            people[role] = session.execute(select(User).where(User.email == email)).scalar_one()
        for role, user in people.items():
            tokens[role] = accounts.issue_token(ctx, session, session.merge(user), "test").token
    return Crew(identifier, world.staff, tokens)


def quota(ctx: Context, identifier: str, tier: str = "area") -> Quota:
    with ctx.tx() as session:
        project = projects.get_project(session, identifier)
        row = session.execute(
            select(Quota).where(Quota.project_id == project.id, Quota.tier == tier)
        ).scalar_one()
        session.expunge(row)
        return row


# --- tus and tar helpers ----------------------------------------------------------------------------------


def digests(data: bytes) -> tuple[str, str]:
    return hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()


def tus_create(
    http: Any,
    c: Crew,
    delivery: str,
    path: str,
    length: int,
    *,
    role: str = "staff",
    extra: dict[str, str] | None = None,
    project: str | None = None,
) -> Any:
    meta = {"project": project or c.project, "delivery": delivery, "path": path, **(extra or {})}
    return http.post(
        "/api/tus/",
        headers={
            **c.headers(role),
            **TUS,
            "Upload-Length": str(length),
            "Upload-Metadata": encode_metadata(meta),
        },
    )


def tus_patch(http: Any, c: Crew, url: str, offset: int, data: bytes, **headers: str) -> Any:
    return http.patch(
        url,
        content=data,
        headers={**c.headers(), **TUS, **OCTETS, "Upload-Offset": str(offset), **headers},
    )


def tus_upload(http: Any, c: Crew, delivery: str, path: str, data: bytes, **extra: str) -> Any:
    created = tus_create(http, c, delivery, path, len(data), extra=extra or None)
    assert created.status_code == 201, created.text
    if not data:
        return created
    return tus_patch(http, c, created.headers["Location"], 0, data)


def open_delivery(http: Any, c: Crew, name: str = "RUN42", role: str = "staff") -> Any:
    response = http.post(
        f"/api/projects/{c.project}/deliveries", json={"name": name}, headers=c.headers(role)
    )
    assert response.status_code == 201, response.text
    return response.json()


def tar_of(files: dict[str, bytes], *, checksums: dict[str, tuple[str, str]] | None = None) -> bytes:
    """A plain tar with each file's MD5/SHA-256 in PAX records (or the given ones)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            md5, sha256 = (checksums or {}).get(path, digests(data))
            info.pax_headers = {"LEVERE.md5": md5, "LEVERE.sha256": sha256}
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def send_batch(http: Any, c: Crew, delivery: str, body: bytes, role: str = "staff") -> Any:
    return http.post(
        f"/api/projects/{c.project}/deliveries/{delivery}/batch",
        content=body,
        headers={**c.headers(role), "Content-Type": "application/x-tar"},
    )


# --- a real `levere serve` ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``levere serve`` in a child process on the test's database and data folder (and S3 area)."""

    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.settings = settings
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEVERE_")}
        env |= {
            "LEVERE_DATA_DIR": str(self.settings.data_dir),
            "LEVERE_DATABASE_URL": self.settings.resolved_database_url,
            "LEVERE_QUEUE_URL": "memory",
            "LEVERE_SMTP__ENABLED": "false",
            "LEVERE_PUBLIC_URL": self.url,
        }
        area = self.settings.tiers.area
        if isinstance(area, S3Spec):
            config = self.workdir / "levere.toml"
            config.write_text(
                "[tiers.area]\n"
                f'type = "s3"\nbackend_id = "{area.backend_id}"\nendpoint_url = "{area.endpoint_url}"\n'
                f'bucket = "{area.bucket}"\nprefix = "{area.prefix}"\n'
                f'access_key = "{area.access_key.get_secret_value()}"\n'
                f'secret_key = "{area.secret_key.get_secret_value()}"\n'
            )
            env["LEVERE_CONFIG_FILE"] = str(config)
        return env

    def start(self, worker: bool = False, own_group: bool = False, **env: str) -> None:
        """Start it (with its embedded job worker if asked, in a process group of its own if asked,
        as a service manager does, and with more settings in ``env``)."""
        levere = Path(sys.executable).parent / "levere"
        self.log = self.workdir / f"server-{time.monotonic_ns()}.log"
        log = open(self.log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                str(levere),
                "serve",
                "--port",
                str(self.port),
                "--worker" if worker else "--no-worker",
                "--log-level",
                "warning",
            ],
            env=self.env() | env,
            start_new_session=own_group,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"levere serve exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("levere serve did not start")

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind runs in the server."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_gracefully(self.proc)


@pytest.fixture
def server(settings: Settings, tmp_path: Path) -> Iterator[Server]:
    srv = Server(settings, tmp_path)
    yield srv
    srv.stop()


def _staged(ctx: Context, url: str) -> int:
    """What the storage durably holds for an upload, read behind the server's back."""
    with ctx.tx() as session:
        staged = session.execute(
            select(Upload.session).where(Upload.id == url.rsplit("/", 1)[1])
        ).scalar_one()
    return ctx.backend(Tier.AREA).staged_offset(staged) if staged else 0


def _paced(data: bytes, chunk: int, pause: float, sent: list[int]) -> Iterator[bytes]:
    for start in range(0, len(data), chunk):
        sent[0] = start
        yield data[start : start + chunk]
        time.sleep(pause)


def _check_stored(
    http: httpx.Client, c: Crew, ctx: Context, path: str, data: bytes, done: httpx.Response
) -> None:
    md5, sha256 = digests(data)
    assert done.headers["Levere-Checksum"] == f"md5={md5},sha256={sha256}"
    got = http.get(f"/api/projects/{c.project}/data/RUN42/{path}", headers=c.headers("member"))
    assert got.status_code == 200 and got.content == data
    with ctx.tx() as session:
        row = session.execute(select(StoredFile).where(StoredFile.path == path)).scalar_one()
        assert (row.size, row.md5, row.sha256) == (len(data), md5, sha256)
    q = quota(ctx, c.project)
    assert (q.used_bytes, q.reserved_bytes) == (len(data), 0)
