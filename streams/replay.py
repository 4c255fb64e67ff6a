"""Backfill a historical order export into the orders topic (``crmstream replay``).

Consumes: a CSV file (optionally ``.gz``) or JSON lines, one row per invoice
LINE, e.g. the UCI "Online Retail" export. Consecutive rows with the same
order id form one order; the file is streamed, so the lines of one order must
be consecutive (as in UCI-style exports, which list an invoice's lines
together). An order id that comes back after other orders is rejected
(``order_not_consecutive``) rather than sent twice under one event id.

Emits: ONE event per order on the orders topic, keyed by the customer id,
validated against the ``orders.v1`` contract before it is sent:

* every quantity positive -> ``order.placed``, ``amount`` = sum of qty x price;
* every quantity negative and the order id starting with the return prefix
  (default ``C``) -> ``order.returned``, ``amount`` = ``refund_amount`` = the
  same sum with the sign turned, items with positive quantities.

Amounts are summed as :class:`~decimal.Decimal` and rounded to 2 places
(half up). ``event_id`` is ``replay:{type}:{order_id}``: replaying the same
export again repeats the same ids, which the workers drop as retries within a
customer's dedupe window (``state.dedupe_window`` recent events, not beyond).
``occurred_at`` is the time of the order's first line (naive times get
``--timezone``); the record timestamp is the send time. Customer ids that a
spreadsheet turned into floats (``17850.0``) are read as ``17850``.

Usage errors (an unknown ``--map`` target, a mapped column missing from the
header, a bad option, an unreadable file) raise before anything is sent.

Failure policy: a row is never skipped silently. A row that cannot become
part of a valid event is rejected with a fixed :class:`Reason`; a problem on
one line rejects its whole order (a partial order would later hide the fixed
one behind the same event id). Rejections never echo field values.

The row -> event logic (:func:`build_events`) is pure; :func:`replay` adds the
file, the producer, the progress display and the rejects file.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import csv
import datetime as dt
import gzip
import io
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError

from schemas.registry import VALIDATORS
from streams import codec
from streams.errors import ConfigError, CrmStreamError
from streams.ingress import _describe as describe_validation_error
from streams.settings import Settings

Format = Literal["csv", "jsonl"]

#: Our fields a ``--map`` can name, in the order the help lists them.
TARGETS = (
    "customer_id",
    "occurred_at",
    "order_id",
    "sku",
    "category",
    "qty",
    "price",
    "amount",
    "region",
    "currency",
)
REQUIRED_TARGETS = ("customer_id", "occurred_at", "order_id")

#: The default ``--map``: the columns of the UCI "Online Retail" export.
UCI_MAP: dict[str, str] = {
    "customer_id": "CustomerID",
    "occurred_at": "InvoiceDate",
    "order_id": "InvoiceNo",
    "sku": "StockCode",
    "qty": "Quantity",
    "price": "UnitPrice",
    "region": "Country",
}
UCI_MAP_SPEC = ",".join(f"{target}={column}" for target, column in UCI_MAP.items())

DEFAULT_CATEGORY = "uncategorised"
PLACED = "order.placed"
RETURNED = "order.returned"
CENT = Decimal("0.01")

_FLOAT_ID = re.compile(r"(\d+)\.0+")
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


class Reason(StrEnum):
    """Why a row was rejected: a fixed set of codes (see :data:`REASON_TEXT`)."""

    UNREADABLE_LINE = "unreadable_line"
    MISSING_ORDER_ID = "missing_order_id"
    MISSING_CUSTOMER_ID = "missing_customer_id"
    BAD_TIMESTAMP = "bad_timestamp"
    BAD_NUMBER = "bad_number"
    NEGATIVE_PRICE = "negative_price"
    ZERO_QUANTITY = "zero_quantity"
    STOCK_ADJUSTMENT = "stock_adjustment"
    MIXED_SIGNS = "mixed_signs"
    INCONSISTENT_ORDER = "inconsistent_order"
    ORDER_NOT_CONSECUTIVE = "order_not_consecutive"
    ORDER_REJECTED = "order_rejected"
    INVALID_EVENT = "invalid_event"


REASON_TEXT: dict[Reason, str] = {
    Reason.UNREADABLE_LINE: "line is not a record (wrong number of fields, or not a JSON object)",
    Reason.MISSING_ORDER_ID: "no order id",
    Reason.MISSING_CUSTOMER_ID: "no customer id",
    Reason.BAD_TIMESTAMP: "order time missing or not readable",
    Reason.BAD_NUMBER: "quantity, price or amount is not a number (quantity: a whole number)",
    Reason.NEGATIVE_PRICE: "negative unit price",
    Reason.ZERO_QUANTITY: "quantity is zero",
    Reason.STOCK_ADJUSTMENT: "negative quantities on an order that is not a return "
    "(stock adjustment, not a sale)",
    Reason.MIXED_SIGNS: "order has both positive and negative quantities",
    Reason.INCONSISTENT_ORDER: "lines of one order name different customers or currencies",
    Reason.ORDER_NOT_CONSECUTIVE: "order id seen earlier in the file "
    "(lines of one order must be consecutive)",
    Reason.ORDER_REJECTED: "another line of the same order was rejected",
    Reason.INVALID_EVENT: "the order breaks the orders.v1 contract",
}


class InputFileError(CrmStreamError):
    """The input file cannot be read as the format it was given as."""


# -- options -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayOptions:
    """How rows become events. Build it with :meth:`create` (which checks the values)."""

    columns: Mapping[str, str] = field(default_factory=lambda: dict(UCI_MAP))
    timezone: dt.tzinfo = dt.UTC
    date_format: str | None = None
    currency: str = "GBP"
    return_prefix: str = "C"

    @classmethod
    def create(
        cls,
        map_spec: str | None = None,
        timezone: str = "UTC",
        date_format: str | None = None,
        currency: str = "GBP",
        return_prefix: str = "C",
    ) -> ReplayOptions:
        """Options from the command line's strings; :class:`ConfigError` names a bad one."""
        columns = parse_map(map_spec) if map_spec is not None else dict(UCI_MAP)
        try:
            zone: dt.tzinfo = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                "--timezone", "not a known time zone (e.g. UTC, Europe/London)"
            ) from None
        if not re.fullmatch(r"[A-Z]{3}", currency):
            raise ConfigError("--currency", "must be a 3-letter ISO code in capitals, e.g. GBP")
        return cls(
            columns=columns,
            timezone=zone,
            date_format=date_format or None,
            currency=currency,
            return_prefix=return_prefix,
        )


def parse_map(spec: str) -> dict[str, str]:
    """``"customer_id=Cust,order_id=Invoice,..."`` -> ``{target: column}``.

    The map replaces the default one, so it must name every required target,
    and ``price`` or ``amount`` (an order needs a total).
    """
    columns: dict[str, str] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        target, eq, column = (s.strip() for s in part.partition("="))
        if not eq or not target or not column:
            raise ConfigError("--map", f"'{part.strip()}' is not target=Column")
        if target not in TARGETS:
            raise ConfigError(
                "--map", f"unknown target '{target}'; targets are: {', '.join(TARGETS)}"
            )
        if target in columns:
            raise ConfigError("--map", f"target '{target}' is mapped twice")
        columns[target] = column
    missing = [t for t in REQUIRED_TARGETS if t not in columns]
    if missing:
        raise ConfigError("--map", f"required target(s) not mapped: {', '.join(missing)}")
    if "price" not in columns and "amount" not in columns:
        raise ConfigError("--map", "map 'price' (with 'qty') or 'amount': orders need a total")
    return columns


def check_columns(options: ReplayOptions, columns: Iterable[str], where: str) -> None:
    """Every mapped column must be in the file's header (``where`` names the file)."""
    present = list(columns)
    for target, column in options.columns.items():
        if column not in present:
            raise ConfigError(
                "--map",
                f"column '{column}' (for {target}) is not in {where}; "
                f"its columns are: {', '.join(present) or '(none)'}",
            )


# -- reading ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SourceRow:
    """One data row: its line number (the header is line 1), its cells by column name,
    the original record (cells for CSV, the object or the text for JSON lines), and
    ``unreadable`` when it is not a record at all."""

    line: int
    values: Mapping[str, str]
    raw: Any
    unreadable: str | None = None


def format_of(path: Path, requested: str | None = None) -> Format:
    """``--format`` if given, else by suffix: ``.jsonl``/``.ndjson``/``.json`` (+``.gz``)."""
    if requested in ("csv", "jsonl"):
        return requested  # type: ignore[return-value]
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return "jsonl" if suffixes and suffixes[-1] in _JSONL_SUFFIXES else "csv"


def csv_rows(text: TextIO) -> tuple[list[str], Iterator[SourceRow]]:
    """The header and the rows of a CSV text stream (blank lines are not rows)."""
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        raise InputFileError("the file is empty (no header line)") from None
    header = [h.strip() for h in header]

    def rows() -> Iterator[SourceRow]:
        line = reader.line_num + 1
        for cells in reader:
            start, line = line, reader.line_num + 1
            if not cells:
                continue
            if len(cells) != len(header):
                problem = f"{len(cells)} fields, the header has {len(header)}"
                yield SourceRow(start, {}, cells, problem)
                continue
            yield SourceRow(start, dict(zip(header, cells, strict=True)), cells)

    return header, rows()


def jsonl_rows(text: TextIO) -> tuple[list[str], Iterator[SourceRow]]:
    """The keys of the first record (as the header) and the rows of a JSON-lines stream."""
    numbered = enumerate(text, start=1)
    first: tuple[int, str] | None = None
    for n, line in numbered:
        if line.strip():
            first = (n, line)
            break
    if first is None:
        raise InputFileError("the file is empty (no JSON record)")
    head = _jsonl_row(*first)
    if head.unreadable:
        raise InputFileError(
            f"line {first[0]} is not a JSON object: is this JSON lines? (try --format csv)"
        )

    def rows() -> Iterator[SourceRow]:
        yield head
        for n, line in numbered:
            if line.strip():
                yield _jsonl_row(n, line)

    return list(head.values), rows()


def _jsonl_row(n: int, line: str) -> SourceRow:
    try:
        data = codec.loads(line)
    except codec.JSONDecodeError:
        return SourceRow(n, {}, line.rstrip("\r\n"), "not JSON")
    if not isinstance(data, dict):
        return SourceRow(n, {}, line.rstrip("\r\n"), "not a JSON object")
    return SourceRow(n, {str(k): _cell(v) for k, v in data.items()}, data)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    return codec.dumps(value).decode()


class Source:
    """An input file opened for streaming: ``columns``, ``rows``, and how far it is read."""

    def __init__(self, path: Path, fmt: Format | None = None) -> None:
        self.path = path
        self.format: Format = fmt or format_of(path)
        try:
            self.size = path.stat().st_size
            self._raw: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise InputFileError(f"cannot read {path}: {exc.strerror}") from None
        binary: Any = self._raw
        if path.suffix.lower() == ".gz":
            binary = gzip.GzipFile(fileobj=self._raw, mode="rb")
        self._text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
        try:
            reader = csv_rows if self.format == "csv" else jsonl_rows
            self.columns, rows = reader(self._text)
        except (UnicodeDecodeError, OSError, EOFError) as exc:
            self.close()
            raise InputFileError(f"cannot read {path}: {_read_problem(exc)}") from None
        except InputFileError as exc:
            self.close()
            raise InputFileError(f"{path}: {exc}") from None
        self.rows = self._guarded(rows)

    def _guarded(self, rows: Iterator[SourceRow]) -> Iterator[SourceRow]:
        last = 1
        try:
            for row in rows:
                last = row.line
                yield row
        except (UnicodeDecodeError, OSError, EOFError, csv.Error) as exc:
            raise InputFileError(
                f"cannot read {self.path} after line {last}: {_read_problem(exc)}"
            ) from None

    @property
    def position(self) -> int:
        """Bytes of the file read so far (of the compressed file for ``.gz``)."""
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        self._text.close()
        self._raw.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _read_problem(exc: BaseException) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(exc, gzip.BadGzipFile):
        return "not a gzip file"
    if isinstance(exc, EOFError):
        return "the gzip file ends early (truncated)"
    return str(exc) or type(exc).__name__


# -- rows -> events (pure) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplayEvent:
    """An order ready to send: validated payload, key = customer id."""

    event_type: str
    order_id: str
    customer_id: str
    payload: dict[str, Any]
    lines: tuple[int, ...]

    @property
    def key(self) -> bytes:
        return self.customer_id.encode()

    @property
    def value(self) -> bytes:
        return codec.dumps(self.payload)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A row that became no event: where, why (code + detail without values), what it was."""

    line: int
    reason: Reason
    detail: str
    raw: Any

    @property
    def text(self) -> str:
        base = REASON_TEXT[self.reason]
        return f"{base}: {self.detail}" if self.detail else base


Outcome = ReplayEvent | Rejection


@dataclass(slots=True)
class _Line:
    """One row, parsed as far as it goes; ``problem`` is the first thing wrong with it."""

    row: SourceRow
    sign: int  # +1 / -1 from the quantity (or the amount); 0 when unknown or zero
    problem: tuple[Reason, str] | None = None
    customer_id: str = ""
    occurred_at: dt.datetime | None = None
    qty: int = 1
    price: Decimal = Decimal(0)
    total: Decimal = Decimal(0)  # |qty| x price, or |amount|
    sku: str = ""
    category: str = DEFAULT_CATEGORY
    region: str = ""
    currency: str = ""


def normalise_customer_id(text: str) -> str:
    """Trim, and read a spreadsheet's float id (``17850.0``) as the integer id (``17850``)."""
    text = text.strip()
    match = _FLOAT_ID.fullmatch(text)
    return match.group(1) if match else text


def parse_time(text: str, options: ReplayOptions) -> dt.datetime | None:
    """The time in ``text`` (``--date-format`` or ISO 8601), zoned; ``None`` if unreadable."""
    text = text.strip()
    if not text:
        return None
    try:
        if options.date_format:
            moment = dt.datetime.strptime(text, options.date_format)
        else:
            moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None or moment.utcoffset() is None:
        moment = moment.replace(tzinfo=options.timezone)
    return moment


def _decimal(text: str) -> Decimal | None:
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _cents(amount: Decimal) -> Decimal:
    """Rounded to 2 places, half up (0.125 -> 0.13)."""
    return amount.quantize(CENT, ROUND_HALF_UP)


def _whole(text: str) -> int | None:
    number = _decimal(text)
    if number is None or number != number.to_integral_value():
        return None
    return int(number)


def _parse_line(row: SourceRow, options: ReplayOptions) -> _Line:
    cols = options.columns

    def cell(target: str) -> str:
        column = cols.get(target)
        return row.values.get(column, "") if column is not None else ""

    qty = _whole(cell("qty")) if "qty" in cols else 1
    price = _decimal(cell("price")) if "price" in cols else None
    amount = _decimal(cell("amount")) if "amount" in cols else None
    if "qty" in cols:
        sign = 0 if not qty else (1 if qty > 0 else -1)
    else:
        sign = 0 if amount is None else (-1 if amount < 0 else 1)
    line = _Line(row, sign)
    line.customer_id = normalise_customer_id(cell("customer_id"))
    line.occurred_at = parse_time(cell("occurred_at"), options)

    checks: list[tuple[bool, Reason, str]] = [  # in order: the first failing one is reported
        (not line.customer_id, Reason.MISSING_CUSTOMER_ID, ""),
        (
            line.occurred_at is None,
            Reason.BAD_TIMESTAMP,
            "does not match --date-format" if options.date_format else "not ISO 8601",
        ),
        (qty is None, Reason.BAD_NUMBER, "quantity"),
        ("price" in cols and price is None, Reason.BAD_NUMBER, "price"),
        ("amount" in cols and amount is None, Reason.BAD_NUMBER, "amount"),
        (price is not None and price < 0, Reason.NEGATIVE_PRICE, ""),
        (qty == 0, Reason.ZERO_QUANTITY, ""),
    ]
    line.problem = next(((reason, detail) for bad, reason, detail in checks if bad), None)
    if line.problem is not None or qty is None:
        return line

    line.qty = abs(qty)
    if amount is not None:
        line.total = abs(amount)
        line.price = price if price is not None else _cents(line.total / line.qty)
    else:
        assert price is not None  # parse_map requires price or amount
        line.price = price
        line.total = line.qty * price
    line.sku = cell("sku").strip()
    line.category = cell("category").strip() or DEFAULT_CATEGORY
    line.region = cell("region").strip()
    line.currency = cell("currency").strip().upper() or options.currency
    return line


def build_events(rows: Iterable[SourceRow], options: ReplayOptions) -> Iterator[Outcome]:
    """Group consecutive rows by order id; yield an event per valid order, else a
    rejection for each row of the order.

    Rejections of rows that belong to no order (unreadable, no order id) are yielded
    with the order they sit in, in line order; they do not split that order.
    """
    seen: set[str] = set()
    order_col = options.columns["order_id"]
    current: str | None = None
    group: list[SourceRow] = []
    loose: list[Rejection] = []

    def flush() -> Iterator[Outcome]:
        outcomes: list[Outcome] = []
        if current is not None and group:
            outcomes.extend(_order(current, group, seen, options))
        rejected = sorted(
            [*(o for o in outcomes if isinstance(o, Rejection)), *loose], key=lambda r: r.line
        )
        yield from (o for o in outcomes if isinstance(o, ReplayEvent))
        yield from rejected

    for row in rows:
        if row.unreadable is not None:
            loose.append(Rejection(row.line, Reason.UNREADABLE_LINE, row.unreadable, row.raw))
            continue
        order_id = row.values.get(order_col, "").strip()
        if not order_id:
            loose.append(Rejection(row.line, Reason.MISSING_ORDER_ID, "", row.raw))
            continue
        if order_id != current:
            yield from flush()
            current, group, loose = order_id, [], []
        group.append(row)
    yield from flush()


def _order(
    order_id: str, rows: list[SourceRow], seen: set[str], options: ReplayOptions
) -> list[Outcome]:
    """One order's outcome: an event, or a rejection for each of its rows."""

    def reject_all(reason: Reason, detail: str = "") -> list[Outcome]:
        return [Rejection(r.line, reason, detail, r.raw) for r in rows]

    if order_id in seen:
        return reject_all(Reason.ORDER_NOT_CONSECUTIVE)
    seen.add(order_id)

    lines = [_parse_line(r, options) for r in rows]
    signs = {line.sign for line in lines if line.sign}
    if len(signs) > 1:
        return reject_all(Reason.MIXED_SIGNS)
    returned = signs == {-1}
    if returned and not order_id.startswith(options.return_prefix):
        return reject_all(Reason.STOCK_ADJUSTMENT)
    if any(line.problem for line in lines):
        return [
            Rejection(line.row.line, *(line.problem or (Reason.ORDER_REJECTED, "")), line.row.raw)
            for line in lines
        ]
    first = lines[0]
    if any(
        line.customer_id != first.customer_id or line.currency != first.currency for line in lines
    ):
        return reject_all(Reason.INCONSISTENT_ORDER)

    event_type = RETURNED if returned else PLACED
    total = _cents(sum((line.total for line in lines), Decimal(0)))
    assert first.occurred_at is not None
    payload: dict[str, Any] = {
        "event_id": f"replay:{event_type}:{order_id}",
        "customer_id": first.customer_id,
        "occurred_at": first.occurred_at.isoformat(),
        "schema_version": 1,
        "type": event_type,
        "order_id": order_id,
        "amount": float(total),
        "currency": first.currency,
    }
    if "sku" in options.columns:
        payload["items"] = [
            {
                "sku": line.sku,
                "category": line.category,
                "qty": line.qty,
                "price": float(line.price),
            }
            for line in lines
        ]
    if first.region:
        payload["region"] = first.region
    if returned:
        payload["refund_amount"] = float(total)
    try:
        VALIDATORS["orders"].validate_python(payload)
    except ValidationError as exc:
        return reject_all(Reason.INVALID_EVENT, describe_validation_error(exc))
    return [
        ReplayEvent(event_type, order_id, first.customer_id, payload, tuple(r.line for r in rows))
    ]


# -- summary -----------------------------------------------------------------------------------


@dataclass
class Summary:
    """What a replay did; :meth:`as_dict` is the ``--json`` form."""

    file: str
    dry_run: bool
    topic: str = ""
    rows_read: int = 0
    events_built: collections.Counter[str] = field(default_factory=collections.Counter)
    events_sent: collections.Counter[str] = field(default_factory=collections.Counter)
    rejected: collections.Counter[Reason] = field(default_factory=collections.Counter)
    first_lines: dict[Reason, list[int]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    elapsed: float = 0.0
    interrupted: bool = False
    input_error: str | None = None
    broker_error: str | None = None

    def reject(self, rejection: Rejection) -> None:
        self.rejected[rejection.reason] += 1
        lines = self.first_lines.setdefault(rejection.reason, [])
        if len(lines) < 3:
            lines.append(rejection.line)

    @property
    def orders_built(self) -> int:
        return sum(self.events_built.values())

    @property
    def rows_rejected(self) -> int:
        return sum(self.rejected.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "dry_run": self.dry_run,
            "topic": self.topic or None,
            "rows_read": self.rows_read,
            "orders_built": self.orders_built,
            "orders_by_type": dict(sorted(self.events_built.items())),
            "events_sent": sum(self.events_sent.values()),
            "events_sent_by_type": dict(sorted(self.events_sent.items())),
            "rows_rejected": self.rows_rejected,
            "rejected_by_reason": {
                reason.value: {
                    "rows": n,
                    "first_lines": self.first_lines[reason],
                    "reason": REASON_TEXT[reason],
                }
                for reason, n in sorted(self.rejected.items())
            },
            "elapsed_seconds": round(self.elapsed, 3),
            "interrupted": self.interrupted,
            "input_error": self.input_error,
            "broker_error": self.broker_error,
        }

    def render(self) -> str:
        """The summary as a few readable lines."""
        where = " (dry run: nothing sent)" if self.dry_run else f" -> {self.topic}"
        rows = [
            f"crmstream replay: {self.file}{where}",
            "  INTERRUPTED (Ctrl-C): counts up to that point" if self.interrupted else "",
            f"  FILE BROKE OFF: {self.input_error}" if self.input_error else "",
            f"  BROKER FAILED: {self.broker_error}" if self.broker_error else "",
            f"  rows read      {self.rows_read:>9,}",
            f"  orders built   {self.orders_built:>9,}  {_by_type(self.events_built)}",
            f"  events sent    {sum(self.events_sent.values()):>9,}  {_by_type(self.events_sent)}",
            f"  rows rejected  {self.rows_rejected:>9,}",
        ]
        for reason, n in sorted(self.rejected.items(), key=lambda kv: (-kv[1], kv[0])):
            first = self.first_lines[reason]
            lines = ", ".join(str(line) for line in first) + (", ..." if n > len(first) else "")
            rows.append(f"    {reason.value:<22} {n:>9,}  {REASON_TEXT[reason]} (lines {lines})")
        rows.append(f"  elapsed        {self.elapsed:>9.1f} s")
        return "\n".join(row.rstrip() for row in rows if row)


def _by_type(counts: collections.Counter[str]) -> str:
    return "(" + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())) + ")" if counts else ""


# -- side effects: rejects file, progress, producer ----------------------------------------------


class RejectsWriter:
    """Rejected rows to a file a user can fix and replay: CSV (line, reason code, detail,
    then the original columns) for CSV input; for JSON lines, the original objects with
    ``reject_line``, ``reject_reason`` and ``reject_detail`` added."""

    PREFIX = ("reject_line", "reject_reason", "reject_detail")

    def __init__(self, path: Path, source: Source) -> None:
        self.format = source.format
        if path.resolve() == source.path.resolve():
            raise ConfigError("--rejects", "must not be the input file")
        try:
            self._file = open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115
        except OSError as exc:
            raise ConfigError("--rejects", f"cannot write {path}: {exc.strerror}") from None
        self._csv = csv.writer(self._file)
        if self.format == "csv":
            self._csv.writerow([*self.PREFIX, *source.columns])

    def write(self, rejection: Rejection) -> None:
        head = (rejection.line, rejection.reason.value, rejection.detail)
        if self.format == "csv":
            self._csv.writerow([*head, *rejection.raw])
            return
        record = dict(zip(self.PREFIX, head, strict=True))
        if isinstance(rejection.raw, dict):
            record.update(rejection.raw)
        else:
            record["raw_line"] = rejection.raw
        self._file.write(codec.dumps(record).decode() + "\n")

    def close(self) -> None:
        self._file.close()


class Progress:
    """Rows read and events sent: a rich bar on a TTY stderr, else a plain line every 5 s."""

    EVERY = 5.0

    def __init__(self, total_bytes: int, dry_run: bool, enabled: bool = True) -> None:
        self.total = total_bytes
        self.dry_run = dry_run
        self.enabled = enabled
        self.started = self.shown = time.monotonic()
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self.enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as Bar

            self._bar = Bar(
                TextColumn("replay"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[counts]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task("replay", total=self.total or None, counts="")
        return self

    def update(self, position: int, summary: Summary) -> None:
        now = time.monotonic()
        if self._bar is not None:
            if now - self.shown >= 0.1:
                self.shown = now
                self._bar.update(self._task, completed=position, counts=self._counts(summary))
            return
        if self.enabled and now - self.shown >= self.EVERY:
            self.shown = now
            print(f"crmstream: {self._counts(summary)}", file=sys.stderr, flush=True)

    def _counts(self, summary: Summary) -> str:
        rate = summary.rows_read / max(time.monotonic() - self.started, 1e-6)
        done = "built" if self.dry_run else "sent"
        events = summary.orders_built if self.dry_run else sum(summary.events_sent.values())
        return f"{summary.rows_read:,} rows read, {events:,} events {done} ({rate:,.0f} rows/s)"

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


class _Sender:
    """An aiokafka producer with at most ``max_in_flight`` unacknowledged sends."""

    def __init__(self, producer: Any, topic: str, summary: Summary, max_in_flight: int) -> None:
        self.producer = producer
        self.topic = topic
        self.summary = summary
        self.max_in_flight = max_in_flight
        self.pending: collections.deque[tuple[asyncio.Future[Any], str]] = collections.deque()

    async def send(self, event: ReplayEvent) -> None:
        future = await self.producer.send(self.topic, event.value, key=event.key)
        self.pending.append((future, event.event_type))
        while len(self.pending) >= self.max_in_flight:
            await self._ack_oldest()

    async def flush(self) -> None:
        await self.producer.flush()
        while self.pending:
            await self._ack_oldest()

    async def _ack_oldest(self) -> None:
        future, event_type = self.pending.popleft()
        await future
        self.summary.events_sent[event_type] += 1


async def replay(
    source: Source,
    options: ReplayOptions,
    settings: Settings | None,
    *,
    rejects: RejectsWriter | None = None,
    progress: Progress | None = None,
    stop: asyncio.Event | None = None,
    on_connected: Callable[[], None] | None = None,
    connect_timeout: float = 30.0,
    max_in_flight: int = 2000,
) -> Summary:
    """Read ``source``, build and validate every order, send each to the orders topic.

    ``settings=None`` is a dry run: nothing is sent. Stops early when ``stop`` is set
    (``interrupted``), the file breaks off (``input_error``) or the broker fails
    (``broker_error``); in every case the summary counts what the broker acknowledged.
    """
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    from streams.errors import BrokerUnreachable
    from streams.topics import ensure_topics

    summary = Summary(str(source.path), dry_run=settings is None)
    progress = progress or Progress(source.size, summary.dry_run, enabled=False)
    producer: Any = None
    sender: _Sender | None = None

    def counted(rows: Iterator[SourceRow]) -> Iterator[SourceRow]:
        for row in rows:
            summary.rows_read += 1
            yield row

    try:
        if settings is not None:
            summary.topic = settings.topics.orders
            await ensure_topics(settings, timeout=connect_timeout)
            producer = AIOKafkaProducer(
                bootstrap_servers=settings.broker_bootstrap,
                linger_ms=20,
                **settings.kafka_client_options(),
            )
            await producer.start()
            sender = _Sender(producer, summary.topic, summary, max_in_flight)
        if on_connected is not None:
            on_connected()
        try:
            for n, outcome in enumerate(build_events(counted(source.rows), options), start=1):
                if isinstance(outcome, Rejection):
                    summary.reject(outcome)
                    if rejects is not None:
                        rejects.write(outcome)
                else:
                    summary.events_built[outcome.event_type] += 1
                    if sender is not None:
                        await sender.send(outcome)
                progress.update(source.position, summary)
                if n % 500 == 0:
                    await asyncio.sleep(0)  # let Ctrl-C and the producer's sender run
                if stop is not None and stop.is_set():
                    summary.interrupted = True
                    break
        except InputFileError as exc:  # the file broke off: still flush what was built
            summary.input_error = str(exc)
        if sender is not None:
            await sender.flush()
    except (KafkaError, BrokerUnreachable) as exc:
        summary.broker_error = str(exc) or type(exc).__name__
    finally:
        if producer is not None:
            with contextlib.suppress(KafkaError):
                await producer.stop()
        summary.elapsed = time.monotonic() - summary.started
    return summary
