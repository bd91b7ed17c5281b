"""Typed configuration for storage backends, one model per backend ``type``.

A settings file lists backends as tables with a ``type`` key; pydantic picks the model from that
key (a discriminated union), so a typo in a field name is an error, not a silently ignored
keyword, and each backend's constructor receives exactly the arguments it declares.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, ValidationError, model_validator

from levere.domain.errors import ConfigurationError

BackendId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: saved on each row that refers to a stored copy, so it must not change once data exists
    backend_id: BackendId


class LocalSpec(_Spec):
    type: Literal["local"] = "local"
    root: Path


class S3Spec(_Spec):
    type: Literal["s3"] = "s3"
    endpoint_url: Annotated[str, Field(pattern=r"^https?://")]
    bucket: Annotated[str, Field(min_length=3, max_length=63)]
    # SecretStr keeps both keys out of reprs, logs and error messages.
    access_key: SecretStr
    secret_key: SecretStr
    region: str = "us-east-1"
    prefix: str = ""
    #: where this backend holds a write-once tier (long-term, audit anchors): keep objects in a
    #: bucket with versioning and object lock, each under a retention, and read back the version
    #: levere wrote. ``false`` only for a store without object lock; levere warns at start-up.
    write_once: bool = True
    #: "compliance": nobody can shorten or lift a retention, levere's own credentials included
    #: (recommended in production); "governance": credentials with the bypass permission can
    retention_mode: Literal["governance", "compliance"] = "governance"
    retention_days: Annotated[int, Field(ge=1)] = 3650

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "object_lock" in data:
            raise ValueError("object_lock is now write_once (true by default)")
        return data


BackendSpec = Annotated[LocalSpec | S3Spec, Field(discriminator="type")]

_ADAPTER: TypeAdapter[LocalSpec | S3Spec] = TypeAdapter(BackendSpec)


def parse_backend_spec(raw: Any) -> LocalSpec | S3Spec:
    """Validate one backend table from a settings file."""
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise ConfigurationError(f"invalid storage backend settings: {problems}") from None
