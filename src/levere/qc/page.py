"""The HTML page of a QC report: one self-contained file, plots drawn as inline SVG.

Nothing is fetched when the page is opened (no script, no style sheet, no font from elsewhere), as it
is read inside the secure zone. Every text from the input (the file name) is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from levere.qc.report import QcReport

WIDTH, HEIGHT = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 60, 16, 28, 44
#: a line chart draws at most this many points; longer series are averaged in equal bins
MAX_POINTS = 800

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 60em; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.75em; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
svg { display: block; margin: 0.5em 0 1.5em; }
svg text { font-size: 11px; fill: #333; }
svg .title { font-size: 13px; font-weight: bold; }
.axis { stroke: #555; stroke-width: 1; }
.grid { stroke: #ddd; stroke-width: 1; }
.line { fill: none; stroke: #2a6fb0; stroke-width: 1.5; }
.bar { fill: #2a6fb0; }
"""


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        return [low]
    step = (high - low) / (count - 1)
    return [low + i * step for i in range(count)]


def _label(value: float) -> str:
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:.3g}"


def _frame(
    title: str,
    x_label: str,
    y_label: str,
    x_range: tuple[float, float] | None,
    y_range: tuple[float, float],
) -> list[str]:
    """The chart's title, axes, grid and tick labels (none on the x axis without ``x_range``)."""
    y0, y1 = y_range
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{escape(title)}">',
        f'<text class="title" x="{LEFT}" y="16">{escape(title)}</text>',
    ]
    for y in _ticks(y0, y1):
        py = TOP + plot_h - (y - y0) / ((y1 - y0) or 1) * plot_h
        parts.append(f'<line class="grid" x1="{LEFT}" y1="{py:.1f}" x2="{LEFT + plot_w}" y2="{py:.1f}"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{py + 4:.1f}" text-anchor="end">{escape(_label(y))}</text>')
    for x in _ticks(*x_range) if x_range else []:
        x0, x1 = x_range or (0, 0)
        px = LEFT + (x - x0) / ((x1 - x0) or 1) * plot_w
        parts.append(
            f'<text x="{px:.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">{escape(_label(round(x)))}</text>'
        )
    parts += [
        f'<line class="axis" x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}"/>',
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 6}" text-anchor="middle">{escape(x_label)}</text>',
        f'<text transform="translate(14,{TOP + plot_h / 2}) rotate(-90)" text-anchor="middle">'
        f"{escape(y_label)}</text>",
    ]
    return parts


def _binned(xs: Sequence[float], ys: Sequence[float]) -> tuple[list[float], list[float]]:
    if len(xs) <= MAX_POINTS:
        return list(xs), list(ys)
    size = -(-len(xs) // MAX_POINTS)
    out_x, out_y = [], []
    for start in range(0, len(xs), size):
        chunk_x, chunk_y = xs[start : start + size], ys[start : start + size]
        out_x.append(sum(chunk_x) / len(chunk_x))
        out_y.append(sum(chunk_y) / len(chunk_y))
    return out_x, out_y


def line_chart(
    title: str,
    xs: Sequence[float],
    ys: Sequence[float],
    *,
    x_label: str,
    y_label: str,
    y_max: float | None = None,
) -> str:
    """An SVG line chart of ``ys`` over ``xs`` (a note instead when there is nothing to draw)."""
    if not xs:
        return f"<p>{escape(title)}: no reads.</p>"
    xs, ys = _binned(xs, ys)
    x0, x1 = min(xs), max(xs)
    top = max(y_max if y_max is not None else 0.0, max(ys)) or 1.0
    parts = _frame(title, x_label, y_label, (x0, x1), (0.0, top))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    points = " ".join(
        f"{LEFT + (x - x0) / ((x1 - x0) or 1) * plot_w:.1f},{TOP + plot_h - y / top * plot_h:.1f}"
        for x, y in zip(xs, ys, strict=True)
    )
    parts.append(f'<polyline class="line" points="{points}"/>')
    parts.append("</svg>")
    return "\n".join(parts)


def bar_chart(
    title: str, labels: Sequence[str], values: Sequence[float], *, x_label: str, y_label: str
) -> str:
    """An SVG bar chart, one bar per label, labels written under the bars when they fit."""
    if not values or not any(values):
        return f"<p>{escape(title)}: no reads.</p>"
    top = max(values)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = _frame(title, x_label, y_label, (0, 0), (0.0, top))
    parts = [
        p for p in parts if 'text-anchor="middle">' not in p or "rotate" in p or "title" in p or x_label in p
    ]
    slot = plot_w / len(values)
    every = max(1, round(len(values) / 12))
    for i, value in enumerate(values):
        h = value / top * plot_h
        parts.append(
            f'<rect class="bar" x="{LEFT + i * slot + slot * 0.1:.1f}" y="{TOP + plot_h - h:.1f}" '
            f'width="{slot * 0.8:.1f}" height="{h:.1f}"><title>{escape(labels[i])}: {escape(_label(value))}</title></rect>'
        )
        if i % every == 0:
            parts.append(
                f'<text x="{LEFT + (i + 0.5) * slot:.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">'
                f"{escape(labels[i])}</text>"
            )
    parts.append("</svg>")
    return "\n".join(parts)


def _duplication_levels(report: QcReport) -> tuple[list[str], list[float]]:
    """The share of sampled reads in sequences seen 1, 2, ... 9 and 10 or more times."""
    dup = report.duplication
    shares = [0.0] * 10
    for copies, sequences in dup.copies.items():
        shares[min(copies, 10) - 1] += copies * sequences / (dup.sampled_reads or 1)
    return [*(str(n) for n in range(1, 10)), "10+"], shares


def render_page(report: QcReport) -> str:
    summary = report.summary()
    name = escape(report.name)
    dup = summary["duplication"]
    rows = [
        ("File", name),
        ("Compression", escape(report.compression)),
        ("Reads", f"{report.reads:,}"),
        ("Bases", f"{report.bases:,}"),
        (
            "Read length (min / mean / max)",
            f"{report.min_length:,} / {summary['length']['mean']:,.2f} / {report.max_length:,}",
        ),
        ("GC content", f"{summary['gc']['fraction']:.2%}"),
        ("Mean quality (Phred)", f"{report.mean_quality:.2f}"),
        ("Bases of quality 20 or more", f"{report.q20_bases:,}"),
        ("Bases of quality 30 or more", f"{report.q30_bases:,}"),
        ("N bases", f"{report.n_bases:,} ({summary['n_content']['fraction']:.4%})"),
        (
            "Duplicate reads" + ("" if dup["exact"] else " (estimated from a sample)"),
            f"{dup['duplicate_fraction']:.2%}",
        ),
    ]
    table = "\n".join(f'<tr><th>{label}</th><td class="n">{value}</td></tr>' for label, value in rows)
    positions = list(range(1, len(report.mean_quality_per_position) + 1))
    lengths = report.length_distribution
    dup_labels, dup_values = _duplication_levels(report)
    charts = [
        line_chart(
            "Mean quality per position",
            positions,
            report.mean_quality_per_position,
            x_label="position in read",
            y_label="mean Phred quality",
            y_max=40,
        ),
        line_chart(
            "N content per position",
            positions,
            [100 * f for f in report.n_fraction_per_position],
            x_label="position in read",
            y_label="% N",
            y_max=1,
        ),
        (
            bar_chart(
                "Read length distribution",
                [str(n) for n, _ in lengths],
                [c for _, c in lengths],
                x_label="read length",
                y_label="reads",
            )
            if len(lengths) <= 60
            else line_chart(
                "Read length distribution",
                [n for n, _ in lengths],
                [c for _, c in lengths],
                x_label="read length",
                y_label="reads",
            )
        ),
        bar_chart(
            "GC content per read",
            [str(p) for p in range(101)],
            report.gc_per_read_percent,
            x_label="% GC in read",
            y_label="reads",
        ),
        bar_chart(
            "Duplication levels",
            dup_labels,
            [100 * v for v in dup_values],
            x_label="copies of a sequence",
            y_label="% of reads",
        ),
    ]
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Quality report: {name}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>Quality report: {name}</h1>
<table>
{table}
</table>
{"".join(charts)}
<p>Duplicates are reads with the same length and the same first and last 32 bases as an earlier read.
Made by levere {escape(summary["tool"]["version"])} with {escape(report.parser)}.</p>
</body>
</html>
"""
