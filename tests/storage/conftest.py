"""Fixtures that give every contract test one fresh backend of each kind.

The S3 kind runs against a real S3 server named by LEVERE_TEST_S3_ENDPOINT, _ACCESS_KEY and
_SECRET_KEY (``scripts/s3-server.sh start DIR PORT`` then ``source DIR/env``). Without them the S3
kind is skipped. One bucket per test session (plus one with object lock) keeps bucket creation out
of every test; each test gets its own key prefix, so tests cannot see each other's objects.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from levere.storage import Backend, LocalBackend, LocalSpec, S3Backend, S3Spec, WrappingBackend, build_backend

S3_ENV = ("LEVERE_TEST_S3_ENDPOINT", "LEVERE_TEST_S3_ACCESS_KEY", "LEVERE_TEST_S3_SECRET_KEY")

BackendFactory = Callable[[], Backend]


def s3_params() -> dict[str, Any] | None:
    values = [os.environ.get(name) for name in S3_ENV]
    if not all(values):
        return None
    endpoint, access, secret = values
    assert endpoint and access and secret
    return {"endpoint_url": endpoint, "access_key": access, "secret_key": secret}


def raw_s3(params: dict[str, Any]) -> Any:
    """A plain boto3 client, for checking what a backend left on the server behind its back."""
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
def raw_s3_client() -> Callable[[dict[str, Any]], Any]:
    return raw_s3


@pytest.fixture(scope="session")
def s3_env() -> dict[str, Any]:
    params = s3_params()
    if params is None:
        pytest.skip(
            "S3 backend not tested: set LEVERE_TEST_S3_ENDPOINT, LEVERE_TEST_S3_ACCESS_KEY and "
            "LEVERE_TEST_S3_SECRET_KEY (scripts/s3-server.sh start DIR PORT writes them to DIR/env)"
        )
    return params


def _empty_bucket(client: Any, bucket: str) -> None:
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for up in page.get("Uploads", []):
            client.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            client.delete_object(
                Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"], BypassGovernanceRetention=True
            )
    client.delete_bucket(Bucket=bucket)


def _session_bucket(params: dict[str, Any], *, object_lock: bool) -> Iterator[str]:
    bucket = f"levere-test-{uuid.uuid4().hex[:12]}" + ("-lock" if object_lock else "")
    S3Backend(bucket=bucket, object_lock=object_lock, **params).ensure_bucket()
    yield bucket
    _empty_bucket(raw_s3(params), bucket)


@pytest.fixture(scope="session")
def s3_bucket(s3_env: dict[str, Any]) -> Iterator[str]:
    yield from _session_bucket(s3_env, object_lock=False)


@pytest.fixture(scope="session")
def s3_lock_bucket(s3_env: dict[str, Any]) -> Iterator[str]:
    yield from _session_bucket(s3_env, object_lock=True)


@pytest.fixture(params=["local", "layered", "s3"])
def kind(request: pytest.FixtureRequest) -> str:
    """ "layered": a local folder under a :class:`WrappingBackend` that only forwards, built by the
    factory as a tier with layers is; it must pass the whole contract as the folder does."""
    return str(request.param)


@pytest.fixture
def backend_args(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Constructor arguments of this test's backend (also handed to child processes)."""
    if kind in ("local", "layered"):
        root = tmp_path / "store"
        root.mkdir()
        return {"root": str(root), "backend_id": "local-test"}
    bucket = request.getfixturevalue("s3_bucket")
    params = request.getfixturevalue("s3_env")
    return {**params, "bucket": bucket, "prefix": f"t-{uuid.uuid4().hex[:12]}/", "backend_id": "s3-test"}


def _make_backend(kind: str, args: dict[str, Any]) -> Backend:
    """Through the factory, as the service and its worker processes build theirs."""
    if kind in ("local", "layered"):
        spec: LocalSpec | S3Spec = LocalSpec(root=Path(args["root"]), backend_id=args["backend_id"])
    else:
        spec = S3Spec(**args)
    return build_backend(spec, wrappers=[WrappingBackend] if kind == "layered" else [])


@pytest.fixture
def backend_factory(kind: str, backend_args: dict[str, Any]) -> BackendFactory:
    """Builds a new backend object on the same storage: a fresh object is what a restarted
    server process would have."""
    return lambda: _make_backend(kind, backend_args)


@pytest.fixture
def backend(backend_factory: BackendFactory) -> Backend:
    return backend_factory()


@pytest.fixture
def leftovers(kind: str, backend_args: dict[str, Any]) -> Callable[[], list[str]]:
    """Everything stored for this test, helper files and unfinished uploads included."""

    def local() -> list[str]:
        root = Path(backend_args["root"])
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    def s3() -> list[str]:
        client = raw_s3(backend_args)
        bucket, prefix = backend_args["bucket"], backend_args["prefix"]
        found = [
            o["Key"][len(prefix) :]
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])
        ]
        uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
        return sorted(found + [f"upload:{u['Key'][len(prefix) :]}" for u in uploads])

    return s3 if kind == "s3" else local


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def dead_backend(kind: str, tmp_path: Path) -> Backend:
    """A backend whose storage is gone: an unmounted root, an S3 server that is not listening."""
    if kind in ("local", "layered"):
        return LocalBackend(tmp_path / "not-mounted", "local-dead")
    return S3Backend(
        f"http://127.0.0.1:{closed_port()}",
        "levere-dead",
        "nokey",
        "nosecret",
        backend_id="s3-dead",
        connect_timeout=1,
        max_attempts=1,
    )
