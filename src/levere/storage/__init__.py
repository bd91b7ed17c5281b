"""Where delivered bytes live: one interface (:class:`Backend`), one module per backend."""

from __future__ import annotations

from typing import assert_never

from levere.storage.base import CHUNK, Backend, ObjectInfo, ObjectWriter, check_key
from levere.storage.config import BackendSpec, LocalSpec, S3Spec, parse_backend_spec
from levere.storage.local import LocalBackend
from levere.storage.s3 import S3Backend

__all__ = [
    "CHUNK",
    "Backend",
    "BackendSpec",
    "LocalBackend",
    "LocalSpec",
    "ObjectInfo",
    "ObjectWriter",
    "S3Backend",
    "S3Spec",
    "build_backend",
    "check_key",
    "parse_backend_spec",
]


def build_backend(spec: LocalSpec | S3Spec) -> Backend:
    """Build the backend a validated spec describes. No I/O happens here."""
    match spec:
        case LocalSpec():
            return LocalBackend(spec.root, spec.backend_id)
        case S3Spec():
            return S3Backend(
                spec.endpoint_url,
                spec.bucket,
                spec.access_key.get_secret_value(),
                spec.secret_key.get_secret_value(),
                region=spec.region,
                prefix=spec.prefix,
                backend_id=spec.backend_id,
                object_lock=spec.object_lock,
                retention_days=spec.retention_days,
            )
        case _:
            assert_never(spec)
