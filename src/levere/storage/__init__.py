"""Where delivered bytes live: one interface (:class:`Backend`), one module per backend.

The specs (pydantic) and the S3 backend (boto3) are imported when first named: the processes
that publish small files on a local disk need neither, and boto3 alone is 26 MB of memory in
each of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, assert_never

from levere.storage.base import CHUNK, Backend, ObjectInfo, ObjectWriter, SmallWrite, check_key
from levere.storage.local import LocalBackend

if TYPE_CHECKING:
    from levere.storage.config import BackendSpec, LocalSpec, S3Spec, parse_backend_spec
    from levere.storage.s3 import S3Backend

_FROM_CONFIG = frozenset({"BackendSpec", "LocalSpec", "S3Spec", "parse_backend_spec"})

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
    "SmallWrite",
    "build_backend",
    "check_key",
    "parse_backend_spec",
]


def __getattr__(name: str) -> Any:
    if name in _FROM_CONFIG:
        from levere.storage import config

        return getattr(config, name)
    if name == "S3Backend":
        from levere.storage.s3 import S3Backend

        return S3Backend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_backend(spec: LocalSpec | S3Spec, *, write_once: bool = False) -> Backend:
    """Build the backend a validated spec describes. No I/O happens here. ``write_once``: it
    holds a write-once tier, so an S3 spec's ``write_once`` (object lock) applies."""
    from levere.storage.config import LocalSpec, S3Spec

    match spec:
        case LocalSpec():
            return LocalBackend(spec.root, spec.backend_id)
        case S3Spec():
            from levere.storage.s3 import S3Backend  # boto3: only where a tier is on S3

            return S3Backend(
                spec.endpoint_url,
                spec.bucket,
                spec.access_key.get_secret_value(),
                spec.secret_key.get_secret_value(),
                region=spec.region,
                prefix=spec.prefix,
                backend_id=spec.backend_id,
                object_lock=write_once and spec.write_once,
                retention_mode=spec.retention_mode,
                retention_days=spec.retention_days,
            )
        case _:
            assert_never(spec)
