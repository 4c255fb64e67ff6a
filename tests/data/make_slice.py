"""Cut ``online_retail_slice.csv`` from the full UCI Online Retail export, deterministically.

Usage (from the repository root)::

    .venv/bin/python tests/data/make_slice.py [SOURCE.csv.gz] [OUT.csv]

Defaults: ``../shared/data/online_retail.csv.gz`` -> ``tests/data/online_retail_slice.csv``.

The slice keeps WHOLE customers (every line of each chosen customer) plus a few
lines without a customer, copied byte for byte and in the source's line order,
under the source's header. Selection (see README.md next to this file):

* customers are ranked by ``sha256(CustomerID)`` (stable, and spread over the whole
  id range rather than its low end); each group takes the first eligible customers in
  that order, and a customer lands in the first group it qualifies for:

  ================  ================================================================  =====
  group             eligible                                                          taken
  ================  ================================================================  =====
  serial returners  >= 3 return (``C``) invoices, <= 250 lines                        3
  returners         >= 1 return invoice, >= 2 purchase invoices, <= 100 lines         20
  frequent buyers   >= 20 purchase invoices, <= 400 lines                             5
  dormant           >= 2 purchase invoices, last line before 2011-04-01, <= 150 lines 15
  one-time buyers   exactly one invoice, a purchase                                   30
  ================  ================================================================  =====

* guest lines: the first invoices (file order) with an empty ``CustomerID``,
  only positive quantities and at most 12 lines, until at least 30 lines;
* stock adjustments: the first 4 invoices (file order) that are not returns
  (no ``C`` prefix) and carry only negative quantities (in this data set they
  all have an empty ``CustomerID``).

Two streamed passes over the gzip file; only per-customer and per-invoice counts are held.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parents[2] / "shared" / "data" / "online_retail.csv.gz"
OUT = HERE / "online_retail_slice.csv"

#: A purchase on or after this date means the customer is not dormant.
DORMANT_BEFORE = "2011-04-01"
GUEST_LINES = 30
GUEST_MAX_INVOICE_LINES = 12
STOCK_ADJUSTMENTS = 4


@dataclass
class Customer:
    lines: int = 0
    purchases: set[str] = field(default_factory=set)
    returns: set[str] = field(default_factory=set)
    last: str = ""


@dataclass
class Invoice:
    lines: int = 0
    customer: str = ""
    positive: bool = True
    negative: bool = True


#: (group, eligible, how many) in priority order.
GROUPS = (
    ("serial returners", lambda c: len(c.returns) >= 3 and c.lines <= 250, 3),
    ("returners", lambda c: c.returns and len(c.purchases) >= 2 and c.lines <= 100, 20),
    ("frequent buyers", lambda c: len(c.purchases) >= 20 and c.lines <= 400, 5),
    (
        "dormant",
        lambda c: len(c.purchases) >= 2 and c.last < DORMANT_BEFORE and c.lines <= 150,
        15,
    ),
    ("one-time buyers", lambda c: len(c.purchases) == 1 and not c.returns, 30),
)


def records(source: Path) -> Iterator[tuple[str, list[str]]]:
    """``(raw line, cells)`` per data line; the source has one record per line."""
    with gzip.open(source, "rt", encoding="utf-8", newline="") as f:
        next(f)  # header
        for line in f:
            yield line, next(csv.reader([line]))


def header(source: Path) -> str:
    with gzip.open(source, "rt", encoding="utf-8", newline="") as f:
        return next(f)


def choose(source: Path) -> tuple[dict[str, str], set[str]]:
    """Chosen customers (id -> group) and chosen customer-less invoices."""
    customers: dict[str, Customer] = {}
    invoices: dict[str, Invoice] = {}
    order: list[str] = []  # customer-less invoices in file order
    for _, (invoice_no, _code, _desc, qty, date, _price, customer_id, _country) in records(source):
        if customer_id:
            c = customers.setdefault(customer_id, Customer())
            c.lines += 1
            (c.returns if invoice_no.startswith("C") else c.purchases).add(invoice_no)
            c.last = max(c.last, date)
            continue
        if invoice_no not in invoices:
            invoices[invoice_no] = Invoice()
            order.append(invoice_no)
        inv = invoices[invoice_no]
        inv.lines += 1
        inv.positive &= int(qty) > 0
        inv.negative &= int(qty) < 0

    ranked = sorted(customers, key=lambda cid: hashlib.sha256(cid.encode()).hexdigest())
    chosen: dict[str, str] = {}
    for group, eligible, wanted in GROUPS:
        taken = [cid for cid in ranked if cid not in chosen and eligible(customers[cid])]
        chosen.update((cid, group) for cid in taken[:wanted])

    guests: set[str] = set()
    guest_lines = 0
    adjustments: set[str] = set()
    for invoice_no in order:
        inv = invoices[invoice_no]
        plain = invoice_no[:1].isdigit()
        if plain and inv.positive and inv.lines <= GUEST_MAX_INVOICE_LINES:
            if guest_lines < GUEST_LINES:
                guests.add(invoice_no)
                guest_lines += inv.lines
        elif plain and inv.negative and len(adjustments) < STOCK_ADJUSTMENTS:
            adjustments.add(invoice_no)
    return chosen, guests | adjustments


def main(argv: list[str]) -> int:
    source = Path(argv[1]) if len(argv) > 1 else SOURCE
    out = Path(argv[2]) if len(argv) > 2 else OUT
    chosen, invoices = choose(source)
    kept = 0
    with open(out, "w", encoding="utf-8", newline="") as f:
        f.write(header(source))
        for line, cells in records(source):
            customer_id, invoice_no = cells[6], cells[0]
            if (customer_id and customer_id in chosen) or (
                not customer_id and invoice_no in invoices
            ):
                f.write(line)
                kept += 1
    groups: dict[str, int] = {}
    for group in chosen.values():
        groups[group] = groups.get(group, 0) + 1
    print(f"{out}: {kept} lines")
    print(f"customers by group: {groups}")
    print(f"invoices without a customer: {', '.join(sorted(invoices))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
