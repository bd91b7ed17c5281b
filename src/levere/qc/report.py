"""The result of the standard analysis, and its JSON summary (keys documented in ``docs/qc.md``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from levere.qc.duplication import FINGERPRINT_END, DuplicationEstimate

SCHEMA = "levere.qc/1"
_DIGITS = 6

I64 = npt.NDArray[np.int64]


def _ratio(part: float, whole: float) -> float:
    return round(part / whole, _DIGITS) if whole else 0.0


@dataclass(frozen=True)
class QcReport:
    name: str
    compression: str
    reads: int
    bases: int
    #: (length, reads) for every length that occurs, shortest first
    length_distribution: list[tuple[int, int]]
    base_counts: dict[str, int]
    gc_bases: int
    #: reads by their GC percentage, rounded to whole percent (index 0 to 100); empty reads left out
    gc_per_read_percent: list[int]
    q20_bases: int
    q30_bases: int
    mean_quality: float
    #: mean Phred quality at positions 1, 2, ... over the reads that reach that position
    mean_quality_per_position: list[float]
    n_bases: int
    n_fraction_per_position: list[float]
    duplication: DuplicationEstimate
    parser: str

    @classmethod
    def from_sums(
        cls,
        *,
        name: str,
        compression: str,
        reads: int,
        reads_by_length: I64,
        bases_by_symbol: I64,
        q20_bases: int,
        q30_bases: int,
        quality_sums: I64,
        n_counts: I64,
        covering: I64,
        reads_by_gc_percent: I64,
        duplication: DuplicationEstimate,
    ) -> QcReport:
        import dnaio

        folded = {
            base: int(bases_by_symbol[ord(base)] + bases_by_symbol[ord(base.lower())]) for base in "ACGTN"
        }
        bases = int(bases_by_symbol.sum())
        folded["other"] = bases - sum(folded.values())
        positions = len(covering)
        cover = np.maximum(covering[:positions], 1)
        return cls(
            name=name,
            compression=compression,
            reads=reads,
            bases=bases,
            length_distribution=[(int(n), int(c)) for n, c in enumerate(reads_by_length) if c],
            base_counts=folded,
            gc_bases=folded["G"] + folded["C"],
            gc_per_read_percent=[int(c) for c in reads_by_gc_percent],
            q20_bases=q20_bases,
            q30_bases=q30_bases,
            mean_quality=_ratio(float(quality_sums.sum()), bases),
            mean_quality_per_position=[
                round(float(s) / float(c), _DIGITS)
                for s, c in zip(quality_sums[:positions], cover, strict=True)
            ],
            n_bases=folded["N"],
            n_fraction_per_position=[
                round(float(s) / float(c), _DIGITS) for s, c in zip(n_counts[:positions], cover, strict=True)
            ],
            duplication=duplication,
            parser=f"dnaio {dnaio.__version__}",
        )

    @property
    def min_length(self) -> int:
        return self.length_distribution[0][0] if self.length_distribution else 0

    @property
    def max_length(self) -> int:
        return self.length_distribution[-1][0] if self.length_distribution else 0

    def summary(self) -> dict[str, Any]:
        """The JSON summary as a dictionary; its keys are documented in ``docs/qc.md``."""
        from levere import __version__

        dup = self.duplication
        return {
            "schema": SCHEMA,
            "file": {"name": self.name, "compression": self.compression},
            "tool": {"name": "levere", "version": __version__, "parser": self.parser},
            "reads": self.reads,
            "bases": self.bases,
            "length": {
                "min": self.min_length,
                "max": self.max_length,
                "mean": _ratio(self.bases, self.reads),
                "distribution": [list(pair) for pair in self.length_distribution],
            },
            "base_counts": dict(self.base_counts),
            "gc": {
                "bases": self.gc_bases,
                "fraction": _ratio(self.gc_bases, self.bases),
                "per_read_percent": list(self.gc_per_read_percent),
            },
            "quality": {
                "encoding": "phred+33",
                "mean": self.mean_quality,
                "q20_bases": self.q20_bases,
                "q30_bases": self.q30_bases,
                "mean_per_position": list(self.mean_quality_per_position),
            },
            "n_content": {
                "bases": self.n_bases,
                "fraction": _ratio(self.n_bases, self.bases),
                "per_position": list(self.n_fraction_per_position),
            },
            "duplication": {
                "method": f"length, first and last {FINGERPRINT_END} bases",
                "duplicate_fraction": round(dup.duplicate_fraction, _DIGITS),
                "exact": dup.exact,
                "sampled_reads": dup.sampled_reads,
                "distinct_in_sample": dup.distinct_in_sample,
                "copies": [[copies, sequences] for copies, sequences in sorted(dup.copies.items())],
            },
        }

    def to_json(self) -> bytes:
        """The JSON summary, UTF-8."""
        return (json.dumps(self.summary(), ensure_ascii=False) + "\n").encode()

    def to_html(self) -> bytes:
        """A self-contained HTML page with the figures and their plots, UTF-8."""
        from levere.qc.page import render_page

        return render_page(self).encode()
