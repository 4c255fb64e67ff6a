"""Backfill real history (the UCI Online Retail slice) through the real broker, then
compare every customer's RFM values, group and stage from the lookup endpoint
with an independent batch computation over the same file.

The batch computation below is written from the definitions in the README
("Customer model") with the csv module and Decimal; it imports nothing from
the product.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import time
import urllib.error
import urllib.request
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from pathlib import Path

from tests.cli import run

SLICE = Path(__file__).parents[1] / "data" / "online_retail_slice.csv"
WINDOWS = (30, 90, 365)
GROUPS = (  # domain.md §2: name, R max, R min, F min, F max, M min, M max (per month)
    ("high_value", 7, None, 3, None, 800, None),
    ("potential", 15, None, 2, None, 500, None),
    ("sleeping", None, 30, None, 1, None, 300),
)


def batch_rfm(path: Path) -> tuple[dt.date, dict[str, dict], int]:
    """Per customer: recency, F and M per window, group and stage, as of the day
    after the file's last invoice; and how many orders (purchases + returns) there are."""
    invoices: dict[str, dict] = {}
    for row in csv.DictReader(path.open(newline="", encoding="utf-8")):
        if not row["CustomerID"] or float(row["Quantity"]) == 0:
            continue
        inv = invoices.setdefault(
            row["InvoiceNo"],
            {
                "customer": str(int(float(row["CustomerID"]))),
                "date": dt.datetime.fromisoformat(row["InvoiceDate"]).date(),
                "total": Decimal(0),
                "negative": int(row["Quantity"]) < 0,
            },
        )
        inv["total"] += int(row["Quantity"]) * Decimal(row["UnitPrice"])
    as_of = max(inv["date"] for inv in invoices.values()) + dt.timedelta(days=1)

    history: dict[str, list[tuple[dt.date, int, int]]] = defaultdict(list)  # (date, orders, cents)
    for number, inv in invoices.items():
        cents = int((abs(inv["total"]) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))
        if number.startswith("C") and inv["negative"]:
            history[inv["customer"]].append((inv["date"], 0, -cents))
        elif not inv["negative"]:
            history[inv["customer"]].append((inv["date"], 1, cents))

    expected = {}
    for customer, entries in history.items():
        purchase_days = sorted({d for d, n, _ in entries if n})
        windows = {}
        for w in WINDOWS:
            inside = [(n, c) for d, n, c in entries if 0 <= (as_of - d).days < w]
            windows[w] = (max(0, sum(n for n, _ in inside)), max(0, sum(c for _, c in inside)))
        recency = (as_of - purchase_days[-1]).days if purchase_days else None
        expected[customer] = {
            "recency_days": recency,
            "windows": windows,
            "group": _group(recency, *windows[90]),
            "stage": _stage(as_of, purchase_days, recency, windows),
        }
    return as_of, expected, sum(len(entries) for entries in history.values())


def _group(recency: int | None, orders: int, cents: int) -> str:
    if recency is None:
        return "other"
    f = Fraction(orders * 30, 90)
    m = Fraction(cents * 30, 90 * 100)
    for name, r_max, r_min, f_min, f_max, m_min, m_max in GROUPS:
        checks = [
            r_max is None or recency <= r_max,
            r_min is None or recency >= r_min,
            f_min is None or f >= f_min,
            f_max is None or f <= f_max,
            m_min is None or m >= m_min,
            m_max is None or m <= m_max,
        ]
        if all(checks):
            return name
    return "other"


def _stage(as_of: dt.date, days: list[dt.date], recency: int | None, windows: dict) -> str:
    if recency is None:
        return "potential"
    if recency >= 90:
        return "churned"
    if recency >= 30:
        return "dormant"
    for i in range(len(days) - 1, 0, -1):  # a comeback within the last 30 days?
        if (as_of - days[i]).days >= 30:
            break
        if (days[i] - days[i - 1]).days >= 30:
            return "reactivated"
    tenure = (as_of - days[0]).days
    if tenure >= 180 and windows[365][0] >= 6:
        return "loyal"
    if tenure < 30 and windows[30][0] < 2:
        return "new"
    return "active"


def _lookup(port: int, customer: str, as_of: str) -> dict | None:
    url = f"http://127.0.0.1:{port}/customers/{customer}?as_of={as_of}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 503):
            return None
        raise


def test_backfilled_rfm_stage_and_group_equal_an_independent_batch_computation(
    crm_settings, workers
):
    as_of_day, expected, orders = batch_rfm(SLICE)
    as_of = f"{as_of_day.isoformat()}T00:00:00Z"
    assert len(expected) >= 50  # the slice holds whole customers of every kind
    assert {e["stage"] for e in expected.values()} >= {"churned", "dormant", "reactivated", "loyal"}

    # Given a worker, when the slice is replayed into the orders topic
    _, port = workers.start()
    replay = run("replay", str(SLICE), "--json", env=crm_settings.as_env(), timeout=180)
    assert replay.returncode == 0, replay.stderr
    assert json.loads(replay.stdout)["events_sent"] == orders

    # Then, once every customer is in the table, each one matches the batch figures
    deadline = time.monotonic() + 120
    pending = set(expected)
    actual: dict[str, dict] = {}
    while pending and time.monotonic() < deadline:
        for customer in sorted(pending):
            doc = _lookup(port, customer, as_of)
            if doc is not None:
                actual[customer] = doc
        pending -= set(actual)
        if pending:
            time.sleep(1)
    assert not pending, f"{len(pending)} customers never appeared, e.g. {sorted(pending)[:3]}"
    time.sleep(3)  # the last batches: a customer may be visible before all their orders are
    actual = {c: _lookup(port, c, as_of) for c in expected}  # type: ignore[misc]

    mismatches = []
    for customer, want in sorted(expected.items()):
        doc = actual[customer]
        assert doc is not None
        got = {
            "recency_days": doc["rfm"]["recency_days"],
            "windows": {
                w: (
                    doc["rfm"]["windows"][f"{w}d"]["frequency"],
                    round(doc["rfm"]["windows"][f"{w}d"]["monetary"] * 100),
                )
                for w in WINDOWS
            },
            "group": doc["rfm"]["group"],
            "stage": doc["stage"]["name"],
        }
        if got != want:
            mismatches.append((customer, want, got))
    assert not mismatches, f"{len(mismatches)} customers differ, first: {mismatches[:2]}"
