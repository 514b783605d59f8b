"""The report's answer to "which regularizers change test accuracy": each configuration against a baseline.

Runs are paired by seed (``Run.seed``): two runs with the same seed start from the same
weights on the same split (one by one, they also draw the same batch order; on stacks the
draws during training depend on the stack), so their difference leaves out much of what
seeds change. The
baseline is the configuration named by ``report.baseline`` (``hreg-report --baseline``), or
else the one whose every override is ``=none`` (``variant=none``, ``regularizer=none``).
"""

from __future__ import annotations

import math

from hreg.report.runs import Run
from hreg.report.stats import LEVEL, MIN_PAIRS, Comparison, holm_correct, paired
from hreg.report.tables import table

METRIC = "test_acc"


def find_baseline(groups: dict[str, list[Run]], chosen: str | None) -> str | None:
    """The baseline's label: ``chosen`` if given, else the configuration whose overrides are all ``=none``."""
    if chosen:
        return chosen
    return next((label for label in groups
                 if label != "defaults" and all(o.endswith("=none") for o in label.split())), None)


def by_seed(runs: list[Run]) -> dict[str, float]:
    """Finished runs' final test accuracy (in percent) by seed; a seed that appears twice is left out."""
    finished = [r for r in runs if r.finished]
    seeds = [r.seed for r in finished]
    return {r.seed: 100 * r.final(METRIC) for r in finished if seeds.count(r.seed) == 1}


def compare(groups: dict[str, list[Run]], baseline: str) -> list[Comparison]:
    """Every other configuration against ``baseline`` on test accuracy, Holm-corrected together."""
    reference = by_seed(groups[baseline])
    comparisons = [paired(label, reference, by_seed(runs)) for label, runs in groups.items() if label != baseline]
    return holm_correct(comparisons)


def _points(value: float) -> str:
    return f"{value:+.2f}"


def _p(value: float) -> str:
    return "–" if math.isnan(value) else ("< 0.001" if value < 0.001 else f"{value:.3f}")


def _verdict(c: Comparison) -> str:
    if not c.testable:
        return f"no test: {c.difference.n} paired seed{'s' if c.difference.n != 1 else ''}"
    if not c.significant():
        return "no significant difference"
    return "better" if c.difference.mean > 0 else "worse"


def sentence(c: Comparison) -> str:
    """``augment: +1.90 points [+1.60, +2.20], p < 0.001`` (the interval and the Holm-corrected p)."""
    d = c.difference
    p = _p(c.p_holm)
    return (f"`{c.label}`: {_points(d.mean)} points [{_points(d.low)}, {_points(d.high)}], "
            f"p {p if p.startswith('<') else '= ' + p}")


def section(groups: dict[str, list[Run]], chosen: str | None) -> str:
    """The Markdown section: the paired table and, in words, what differs and what does not."""
    baseline = find_baseline(groups, chosen)
    if baseline is None:
        return ("No baseline to compare against: no configuration has only `=none` overrides. Name one with "
                "`report.baseline=LABEL` (or `hreg-report DIR --baseline LABEL`), LABEL as in the table above.")
    if baseline not in groups:
        return (f"The baseline `{baseline}` (report.baseline) is not among the configurations with finished runs: "
                + ", ".join(f"`{label}`" for label in groups) + ".")
    comparisons = compare(groups, baseline)
    if not comparisons:
        return f"Only one configuration (`{baseline}`): nothing to compare."
    intro = (f"Each configuration against `{baseline}`, paired by seed (the same seed: the same initial "
             f"weights and split): the mean difference in final test accuracy (percentage points) with its "
             f"{LEVEL:.0%} Student t interval, and the paired t-test's p-value, corrected by Holm's method for "
             f"{len(comparisons)} comparison{'s' if len(comparisons) > 1 else ''}.")
    rows = [[c.label, str(c.difference.n),
             _points(c.difference.mean) if c.difference.n else "–",
             f"[{_points(c.difference.low)}, {_points(c.difference.high)}]" if c.testable else "–",
             _p(c.p), _p(c.p_holm), _verdict(c)] for c in comparisons]
    header = ["configuration", "paired seeds", "test acc difference (pp)", f"{LEVEL:.0%} interval",
              "p (paired t)", "p (Holm)", "verdict"]
    if not any(c.testable for c in comparisons):
        words = (f"No test is possible: a test needs at least {MIN_PAIRS} seeds of a configuration paired with "
                 f"the baseline's (run more, e.g. `seed=0,1,2,3,4`).")
    else:
        better = [sentence(c) for c in comparisons if c.significant() and c.difference.mean > 0]
        worse = [sentence(c) for c in comparisons if c.significant() and c.difference.mean < 0]
        same = [f"`{c.label}`" for c in comparisons if c.testable and not c.significant()]
        words = "\n".join([
            f"- Better than `{baseline}`: " + ("; ".join(better) or "none") + ".",
            f"- Worse than `{baseline}`: " + ("; ".join(worse) or "none") + ".",
            f"- No significant difference at {1 - LEVEL:.0%}: " + (", ".join(same) or "none") + ".",
        ])
    return "\n\n".join([intro, table(header, rows), words])
