"""The one way a backend is built: from a :class:`Recipe` (a validated spec, whether it holds a
write-once tier, and the wrappers laid over it).

Design notes
------------
* Whatever :func:`build` returns carries its recipe (:attr:`Backend.recipe`). The data plane hands
  that recipe, never a spec or a folder, to its worker processes, which call :func:`build` with it:
  a child writes through exactly the layers the service writes through, so a wrapping backend
  (encryption, say) cannot be bypassed by a fast path.
* A wrapper is any picklable callable taking the backend built so far and returning the backend
  to use instead (a :class:`~levere.storage.wrapping.WrappingBackend` subclass, or a
  ``functools.partial`` of one). The first wrapper is laid directly over the spec's backend.
* A write-once tier needs a backend that can keep objects as written: if a wrapper does not
  declare :attr:`Capability.WRITE_ONCE`, building the tier is refused.
* The S3 backend (boto3) is imported only where a spec names S3.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, assert_never

from levere.domain.errors import ConfigurationError
from levere.storage.base import Backend, Capability

if TYPE_CHECKING:
    from levere.storage.config import LocalSpec, S3Spec

#: lays a layer over a backend; must pickle (worker processes rebuild the same layers)
Wrapper = Callable[[Backend], Backend]


@dataclass(frozen=True)
class Recipe:
    """Everything needed to build the same backend again, in this process or another."""

    spec: LocalSpec | S3Spec
    #: it holds a write-once tier, so an S3 spec's ``write_once`` (object lock) applies
    write_once: bool = False
    wrappers: tuple[Wrapper, ...] = ()


def build(recipe: Recipe) -> Backend:
    """The backend ``recipe`` describes, wrappers laid over it in order. No I/O happens here."""
    backend = _base(recipe.spec, recipe.write_once)
    for wrap in recipe.wrappers:
        backend = wrap(backend)
    if recipe.write_once and Capability.WRITE_ONCE not in backend.capabilities:
        raise ConfigurationError(
            f"storage {recipe.spec.backend_id!r} holds a write-once tier, "
            f"but {backend!r} cannot keep objects as written"
        )
    backend.recipe = recipe
    return backend


def build_backend(
    spec: LocalSpec | S3Spec, *, write_once: bool = False, wrappers: Sequence[Wrapper] = ()
) -> Backend:
    """:func:`build` from a spec (and the tier's write-once property and wrappers)."""
    return build(Recipe(spec, write_once, tuple(wrappers)))


def _base(spec: LocalSpec | S3Spec, write_once: bool) -> Backend:
    from levere.storage.config import LocalSpec, S3Spec

    match spec:
        case LocalSpec():
            from levere.storage.local import LocalBackend

            return LocalBackend(spec.root, spec.backend_id)
        case S3Spec():
            from levere.storage.s3 import S3Backend

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
