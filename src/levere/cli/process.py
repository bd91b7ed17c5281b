"""Settings of the running Python process that the commands share."""

from __future__ import annotations

import gc


def tune_gc() -> None:
    """Keep what is loaded by now out of the cycle collector's work, and let it run less often.

    A delivery (on either side) makes and keeps hundreds of thousands of small objects, and every
    full collection walks them all again, a large share of a batch's time on the service's side
    and a smaller one on the client's (docs/benchmarks.md). Frozen objects are never collected
    (they live as long as the process anyway); 10,000 allocations between young collections
    instead of 700 only lets a little more garbage wait."""
    gc.freeze()
    gc.set_threshold(10_000, 20, 10)
