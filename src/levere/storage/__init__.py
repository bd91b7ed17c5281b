"""Where delivered bytes live: one interface (:class:`Backend`), one module per backend, one
factory (:mod:`levere.storage.factory`) that builds a backend and the layers over it
(:class:`WrappingBackend`) from a recipe, in the service and in every worker process alike.

The specs (pydantic) and the S3 backend (boto3) are imported when first named: the processes
that publish small files on a local disk need neither, and boto3 alone is 26 MB of memory in
each of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from levere.storage.base import CHUNK, Backend, Capability, ObjectInfo, ObjectWriter, SmallWrite, check_key
from levere.storage.factory import Recipe, Wrapper, build, build_backend
from levere.storage.local import LocalBackend
from levere.storage.wrapping import WrappingBackend

if TYPE_CHECKING:
    from levere.storage.config import BackendSpec, LocalSpec, S3Spec, parse_backend_spec
    from levere.storage.s3 import S3Backend

_FROM_CONFIG = frozenset({"BackendSpec", "LocalSpec", "S3Spec", "parse_backend_spec"})

__all__ = [
    "CHUNK",
    "Backend",
    "BackendSpec",
    "Capability",
    "LocalBackend",
    "LocalSpec",
    "ObjectInfo",
    "ObjectWriter",
    "Recipe",
    "S3Backend",
    "S3Spec",
    "SmallWrite",
    "Wrapper",
    "WrappingBackend",
    "build",
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
