"""Numbers and tables as the report and the search summary write them (Markdown)."""

from __future__ import annotations

import math
from collections.abc import Callable

from hreg.report.stats import t_interval


def percent(value: float) -> str:
    return "–" if math.isnan(value) else f"{100 * value:.2f}"


def number(value: float, digits: int = 3) -> str:
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def mean_interval(values: list[float], fmt: Callable[[float], str]) -> str:
    """``mean [low, high]`` with the 95% Student t interval (from two values on), NaNs left out."""
    interval = t_interval(values)
    if interval.n == 0:
        return "–"
    if interval.n == 1:
        return fmt(interval.mean)
    return f"{fmt(interval.mean)} [{fmt(interval.low)}, {fmt(interval.high)}]"


def table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(r) for r in rows)])
