"""Start-up check of the places levere keeps write-once: long-term storage and the audit anchor sink.

``levere serve`` and ``levere worker`` run it before they take any work, so that a long-term bucket
without versioning and object lock is found at once rather than after years of copies that anyone
with the bucket's credentials could have deleted. A missing bucket is created with both.
"""

from __future__ import annotations

from levere.context import Context
from levere.domain.tiers import TIER_PROPERTIES, placed_tiers, tier_words


def prepare(ctx: Context) -> list[str]:
    """Make sure every write-once place protects what levere writes there; returns a warning for
    each place the configuration left unprotected (``write_once = false``). Raises
    ``ConfigurationError`` (a bucket without object lock) or ``StorageUnavailable``."""
    places = [(tier_words(t), ctx.backend(t)) for t in placed_tiers() if TIER_PROPERTIES[t].write_once]
    sink = ctx.anchor_sink()
    if sink is not None:
        places.append(("the audit anchor sink", sink))
    warnings = []
    for words, backend in places:
        warning = backend.prepare_write_once()
        if warning:
            warnings.append(f"{words} is not write-once: {warning}")
    return warnings
