"""Charts drawn on the server as SVG: a tier's use over time as a step line under its quota.

The page gets coordinates, not a drawing library: the template writes a ``<polyline>`` from them,
so the chart needs no script and passes the page's content security policy (presentation
attributes, no inline style).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from levere.domain.units import format_size
from levere.services.project_history import TierSeries

WIDTH, HEIGHT = 600, 180
#: room for the axis labels around the plot
LEFT, RIGHT, TOP, BOTTOM = 70, 10, 12, 24


@dataclass(frozen=True)
class UseChart:
    series: TierSeries
    points: str  # the step line, as a polyline's ``points``
    limit_y: float | None  # where the quota's line is drawn (None: no quota)
    top_label: str  # the value at the top of the plot
    first_day: date
    last_day: date
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right_x: int = WIDTH - RIGHT
    bottom_y: int = HEIGHT - BOTTOM
    top_y: int = TOP


def use_chart(series: TierSeries) -> UseChart:
    points = series.points
    first, last = points[0].day, points[-1].day
    span = max((last - first).days, 1)
    top = max([series.limit_bytes, *(p.bytes for p in points), 1])
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(day: date) -> float:
        if first == last:
            return float(WIDTH - RIGHT)
        return LEFT + plot_w * (day - first).days / span

    def y(value: int) -> float:
        return TOP + plot_h * (1 - value / top)

    coords: list[tuple[float, float]] = [(LEFT, y(0))] if first != last else [(LEFT, y(points[0].bytes))]
    for point in points:
        # a step: use stays level until the day it changed
        coords.append((x(point.day), coords[-1][1]))
        coords.append((x(point.day), y(point.bytes)))
    return UseChart(
        series=series,
        points=" ".join(f"{px:.1f},{py:.1f}" for px, py in coords),
        limit_y=y(series.limit_bytes) if series.limit_bytes else None,
        top_label=format_size(top),
        first_day=first,
        last_day=last,
    )
