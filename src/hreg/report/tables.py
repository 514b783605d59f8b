"""Numbers and tables as the report and the search summary write them (Markdown)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable


def percent(value: float) -> str:
    return "–" if math.isnan(value) else f"{100 * value:.2f}"


def number(value: float, digits: int = 3) -> str:
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def mean_std(values: list[float], fmt: Callable[[float], str]) -> str:
    """``mean ± sample std`` (std only from two values on), NaNs left out."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "–"
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.mean(values))} ± {fmt(statistics.stdev(values))}"


def table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(r) for r in rows)])
