"""The uplift report: per action type, what the treated (sent) actions achieved against
the held-out ones (the control group the contact policy keeps, ``policy.holdout``).
Pure: it reads records (dicts as published) and returns figures; the CLI
(``crmstream report actions``) reads the topics and prints them.

Per action type, over actions whose time (``created_at`` of a send, ``decided_at`` of
a hold-out) is at or after ``since``:

- **treated**: actions on ``crm.actions`` (distinct ids); of them, those with a
  ``delivered``, ``opened``, ``clicked`` outcome on ``crm.action-outcomes``;
  **converted**: those a purchase converted (``crm.conversions``, group ``treated``);
- **held out**: ``held_out`` decisions on ``crm.action-decisions`` (distinct action
  ids) and their conversions (group ``held_out``);
- **revenue**: the conversions' net revenue (the latest revision of each conversion,
  so after refunds), in the orders' currency (one currency is assumed; the report
  names the currencies it saw);
- **conversion uplift** = treated conversion rate - held-out conversion rate, with a
  95 % confidence interval by **Newcombe's hybrid score method** (method 10 of
  Newcombe 1998: the difference of two independent proportions from their Wilson
  score intervals), which keeps its coverage near 95 % for small counts and rates
  near 0, where the Wald interval does not.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: The normal quantile of a two-sided 95 % interval.
Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (``(0, 1)`` when ``n`` is 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> tuple[float, float, float]:
    """``p1 - p2`` and its Newcombe hybrid score interval (None-free: needs n1, n2 > 0)."""
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, z)
    l2, u2 = wilson(x2, n2, z)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return d, low, high


@dataclass(slots=True)
class Arm:
    """One side (treated or held out) of one action type."""

    actions: set[str] = field(default_factory=set)
    delivered: set[str] = field(default_factory=set)
    opened: set[str] = field(default_factory=set)
    clicked: set[str] = field(default_factory=set)
    converted: set[str] = field(default_factory=set)
    revenue: float = 0.0

    @property
    def rate(self) -> float | None:
        return len(self.converted) / len(self.actions) if self.actions else None


@dataclass(frozen=True, slots=True)
class Row:
    """The figures of one action type."""

    action_type: str
    sent: int
    delivered: int
    opened: int
    clicked: int
    converted: int
    revenue: float
    held_out: int
    held_out_converted: int
    held_out_revenue: float
    treated_rate: float | None
    held_out_rate: float | None
    #: Treated rate - held-out rate and its 95 % interval (None without both groups).
    uplift: float | None
    low: float | None
    high: float | None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class Report:
    rows: tuple[Row, ...]
    currencies: tuple[str, ...]
    method: str = "Newcombe hybrid score (Wilson) 95 % interval"

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "currencies": list(self.currencies),
            "action_types": [r.as_dict() for r in self.rows],
        }


def build(
    actions: Iterable[Mapping[str, Any]],
    decisions: Iterable[Mapping[str, Any]],
    outcomes: Iterable[Mapping[str, Any]],
    conversions: Iterable[Mapping[str, Any]],
    since: str | None = None,
) -> Report:
    """The report from the records of the four topics (``since``: an ISO time, UTC
    ``Z`` form as published, e.g. ``2026-01-05T00:00:00Z``; earlier actions are left out)."""
    treated: dict[str, Arm] = {}
    held: dict[str, Arm] = {}
    type_of: dict[str, tuple[str, bool]] = {}  # action id -> (type, treated?)
    for a in actions:
        if since is not None and str(a.get("created_at", "")) < since:
            continue
        kind, action_id = str(a["action_type"]), str(a["action_id"])
        treated.setdefault(kind, Arm()).actions.add(action_id)
        type_of[action_id] = (kind, True)
    for d in decisions:
        if d.get("decision") != "held_out" or d.get("action_type") is None:
            continue
        if since is not None and str(d.get("decided_at", "")) < since:
            continue
        kind, action_id = str(d["action_type"]), str(d["action_id"])
        held.setdefault(kind, Arm()).actions.add(action_id)
        type_of.setdefault(action_id, (kind, False))
    for o in outcomes:
        known = type_of.get(str(o.get("action_id")))
        if known is None or not known[1]:
            continue
        arm = treated[known[0]]
        kind = str(o.get("type", "")).removeprefix("outcome.")
        if kind in ("delivered", "opened", "clicked"):
            getattr(arm, kind).add(str(o["action_id"]))
    latest: dict[str, Mapping[str, Any]] = {}
    for c in conversions:
        cid = str(c["conversion_id"])
        if cid not in latest or int(c["revision"]) >= int(latest[cid]["revision"]):
            latest[cid] = c
    currencies: set[str] = set()
    for c in latest.values():
        action_id = str(c["action_id"])
        known = type_of.get(action_id)
        if known is None:
            continue  # its action is before ``since``, or not on the topics read
        arms = treated if c.get("group") == "treated" else held
        side = arms.get(known[0])
        if side is None or action_id not in side.actions:
            continue
        side.converted.add(action_id)
        side.revenue += float(c["revenue"])
        currencies.add(str(c.get("currency", "")))
    rows = []
    for kind in sorted(set(treated) | set(held)):
        t, h = treated.get(kind, Arm()), held.get(kind, Arm())
        uplift = low = high = None
        if t.actions and h.actions:
            uplift, low, high = newcombe(
                len(t.converted), len(t.actions), len(h.converted), len(h.actions)
            )
        rows.append(
            Row(
                action_type=kind,
                sent=len(t.actions),
                delivered=len(t.delivered),
                opened=len(t.opened | t.clicked),
                clicked=len(t.clicked),
                converted=len(t.converted),
                revenue=round(t.revenue, 2),
                held_out=len(h.actions),
                held_out_converted=len(h.converted),
                held_out_revenue=round(h.revenue, 2),
                treated_rate=t.rate,
                held_out_rate=h.rate,
                uplift=uplift,
                low=low,
                high=high,
            )
        )
    return Report(tuple(rows), tuple(sorted(currencies)))


def table(report: Report) -> str:
    """The report as a text table a marketer reads."""
    head = (
        "action type",
        "sent",
        "deliv.",
        "opened",
        "clicked",
        "conv.",
        "conv. %",
        "revenue",
        "held out",
        "conv.",
        "conv. %",
        "uplift (95 % CI), points",
    )
    lines = [head]
    for r in report.rows:
        lines.append(
            (
                r.action_type,
                str(r.sent),
                str(r.delivered),
                str(r.opened),
                str(r.clicked),
                str(r.converted),
                _pct(r.treated_rate),
                f"{r.revenue:,.2f}",
                str(r.held_out),
                str(r.held_out_converted),
                _pct(r.held_out_rate),
                _uplift(r),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = []
    for n, line in enumerate(lines):
        cells = [
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
            for i, cell in enumerate(line)
        ]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    money = ", ".join(c for c in report.currencies if c) or "-"
    out.append("")
    out.append(
        f"Treated = sent; held out = the action type's control group (policy.holdout). "
        f"Conversion: a purchase within the attribution window (docs/outcomes.md). "
        f"Revenue net of refunds ({money}). Interval: {report.method}; "
        f"n/a without a control group."
    )
    return "\n".join(out)


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{100 * rate:.1f}"


def _uplift(r: Row) -> str:
    if r.uplift is None or r.low is None or r.high is None:
        return "n/a"
    sign = "" if r.low > 0 or r.high < 0 else " (not significant)"
    return f"{100 * r.uplift:+.1f} [{100 * r.low:+.1f}, {100 * r.high:+.1f}]{sign}"
