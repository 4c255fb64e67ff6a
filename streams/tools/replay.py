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
(half up). ``event_id`` is ``replay:{type}:{order_id}``, so replaying the same
export again repeats the same ids. ``occurred_at`` is the time of the order's
first line (naive times get ``--timezone``); the record timestamp is the send
time. Customer ids that a spreadsheet turned into floats (``17850.0``) are read
as ``17850``.

Order of sending: event time. The workers merge their input topics in event-time
order per partition and refuse an event older than its partition's stream time
minus ``CRM_ALLOWED_LATENESS``, so the events go out sorted by ``occurred_at``,
ties in file order (the order's first line), whatever the file's order: an
external sort (:class:`ExternalSort`) keeps runs of at most ``--sort-memory``
MiB, spills each sorted run to a JSON-lines file in a temporary directory
(removed at the end, also after Ctrl-C or an error) and k-way merges the runs
while sending. Nothing is sent before the whole file is read. ``--assume-sorted``
skips the sort and sends in file order as the file is read.

What the workers would refuse is rejected here, not sent: before sending,
:func:`read_stream_times` reads the last record batch of every input
topic-partition (a few requests) for the latest ``occurred_at`` per partition;
an order older than its partition's time minus the allowed lateness is
``too_late``, one dated after now + ``CRM_MAX_CLOCK_SKEW`` is
``future_event_time`` (:class:`TimeCheck`). A dry run reads the stream times
too if the broker answers, and says the check was skipped if it does not.

Usage errors (an unknown ``--map`` target, a mapped column missing from the
header, a bad option, an unreadable file) raise before anything is sent.

Failure policy: a row is never skipped silently. A row that cannot become
part of a valid event is rejected with a fixed :class:`Reason`; a problem on
one line rejects its whole order (a partial order would later hide the fixed
one behind the same event id), and so does a refused order. Rejections never
echo field values.

The row -> event logic (:func:`build_events`), the sort and the time check are
pure or local; :func:`replay` adds the broker, the producer, the progress
display and the rejects file.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import csv
import datetime as dt
import gzip
import heapq
import io
import logging
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiokafka.partitioner import murmur2
from pydantic import ValidationError

from schemas import codec
from schemas.deadletter import ErrorCode
from schemas.errors import ConfigError, CrmStreamError
from schemas.ingress import _describe as describe_validation_error
from schemas.registry import VALIDATORS
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
    #: The workers' own dead-letter codes: the replay refuses what they would refuse.
    TOO_LATE = ErrorCode.TOO_LATE.value
    FUTURE_EVENT_TIME = ErrorCode.FUTURE_EVENT_TIME.value


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
    Reason.TOO_LATE: "order older than its partition's stream time minus CRM_ALLOWED_LATENESS "
    "(the workers would refuse it)",
    Reason.FUTURE_EVENT_TIME: "order dated after now + CRM_MAX_CLOCK_SKEW "
    "(the workers would refuse it)",
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
    """An order ready to send: validated payload, key = customer id, its lines (numbers and,
    for the rejects file, the original records) and its event time."""

    event_type: str
    order_id: str
    customer_id: str
    payload: dict[str, Any]
    lines: tuple[int, ...]
    occurred_at: dt.datetime
    raw: tuple[Any, ...] = field(default=(), repr=False, compare=False)

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
        ReplayEvent(
            event_type,
            order_id,
            first.customer_id,
            payload,
            tuple(r.line for r in rows),
            first.occurred_at,
            tuple(r.raw for r in rows),
        )
    ]


# -- event-time order: external sort (bounded memory) -------------------------------------------

#: An event waiting to be sent, as the sort keeps it: (occurred_at in microseconds since the
#: epoch, the order's first line in the file, event type, key = customer id, value bytes).
#: Tuples compare field by field and (time, first line) is unique, so sorting them is the
#: documented order: event time, ties by position in the file.
SortItem = tuple[int, int, str, str, bytes]

#: ``--sort-memory`` default, MiB: the whole UCI file (31 MB of event JSON) sorts in two runs.
DEFAULT_SORT_MEMORY_MB = 32
#: Bytes an item costs in memory beyond its value (tuple, ints, key string, bytes header).
ITEM_OVERHEAD = 240
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def sort_item(event: ReplayEvent) -> SortItem:
    """``event`` as the sort keeps it (its value serialised once, here)."""
    at = (event.occurred_at - _EPOCH) // _MICROSECOND
    # A copy of the exact size: orjson's bytes keep their ~4 KiB buffer, ~5x the JSON of
    # an average order, which would make the memory bound a fiction.
    value = bytes(memoryview(event.value))
    return (at, event.lines[0], event.event_type, event.customer_id, value)


class ExternalSort:
    """Items in event-time order with bounded memory.

    :meth:`add` collects a run until it holds ``memory`` bytes (estimated: value +
    :data:`ITEM_OVERHEAD`), sorts it and spills it to a JSON-lines file in a temporary
    directory; :meth:`merged` sorts the last run in memory and k-way merges it with
    the spilled ones (:func:`heapq.merge`; more than ``fan_in`` files are first merged
    into fewer). Use it as a context manager: the directory and its files are removed
    on exit, whatever ended the replay (errors, Ctrl-C included).
    """

    def __init__(
        self, memory: int, *, fan_in: int = 256, directory: str | Path | None = None
    ) -> None:
        if memory < 1 or fan_in < 2:
            raise ValueError("memory must be >= 1 byte and fan_in >= 2")
        self.memory = memory
        self.fan_in = fan_in
        self.count = 0
        self.runs_spilled = 0
        self._parent = directory
        self.path: Path | None = None  # the temporary directory, once a run is spilled
        self._run: list[SortItem] = []
        self._size = 0
        self._files: list[Path] = []
        self._written = 0  # files written, to name the next one
        self._readers: list[Generator[SortItem]] = []

    def __enter__(self) -> ExternalSort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, item: SortItem) -> None:
        self._run.append(item)
        self.count += 1
        self._size += len(item[4]) + ITEM_OVERHEAD
        if self._size >= self.memory:
            self._run.sort()
            self._files.append(self._write(self._run))
            self.runs_spilled += 1
            self._run, self._size = [], 0

    def merged(self) -> Iterator[SortItem]:
        """Every item added, in order (call once, after the last :meth:`add`)."""
        self._run.sort()
        while len(self._files) >= self.fan_in:  # too many open files: merge the first ones
            group, self._files = self._files[: self.fan_in], self._files[self.fan_in :]
            self._files.append(self._write(heapq.merge(*map(self._read, group))))
            for path in group:
                path.unlink()
        yield from heapq.merge(*map(self._read, self._files), iter(self._run))

    def close(self) -> None:
        """Close the spill files and remove the temporary directory."""
        for reader in self._readers:
            reader.close()
        self._readers.clear()
        self._run = []
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)

    def _write(self, items: Iterable[SortItem]) -> Path:
        if self.path is None:
            self.path = Path(tempfile.mkdtemp(prefix="crmstream-replay-", dir=self._parent))
        path = self.path / f"run-{self._written:05d}.jsonl"
        self._written += 1
        with open(path, "wb") as out:
            out.writelines(
                codec.dumps([at, line, kind, key, value.decode()]) + b"\n"
                for at, line, kind, key, value in items
            )
        return path

    def _read(self, path: Path) -> Generator[SortItem]:
        reader = self._lines(path)
        self._readers.append(reader)
        return reader

    @staticmethod
    def _lines(path: Path) -> Generator[SortItem]:
        with open(path, "rb", buffering=1 << 16) as spilled:
            for text in spilled:
                at, line, kind, key, value = codec.loads(text)
                yield (at, line, kind, key, value.encode())


# -- what the workers would refuse: stream time and clock skew ----------------------------------


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partition for a key (murmur2), as the producer picks it.

    A copy of :func:`streams.kafka.partition_for`, which imports faust: a replay (and
    its dry run) starts without it. ``tests/unit/test_kafka_helpers.py`` holds both to
    Kafka's partitioner and to each other.
    """
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def duration_text(seconds: float) -> str:
    """``604800`` -> ``"7 days"``, ``3600`` -> ``"1 hour"``, ``90`` -> ``"90 s"``."""
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds:g} s"


@dataclass
class StreamTimes:
    """What the workers compare an event with: per partition of the input topics, the
    latest ``occurred_at`` found on the broker (``partitions`` = 0: not known)."""

    partitions: int = 0
    latest: dict[int, dt.datetime] = field(default_factory=dict)
    #: How it was found, for the summary (e.g. "skipped: ...").
    note: str = "not checked"


@dataclass
class TimeCheck:
    """Which events the workers would refuse; pure (the broker is read by
    :func:`read_stream_times`).

    An event dated after ``not_after`` (now + ``CRM_MAX_CLOCK_SKEW``) is
    ``future_event_time``; one older than its partition's stream time minus
    ``allowed_lateness`` is ``too_late`` (an event exactly at that bound is kept).
    :meth:`advance` moves a partition's stream time with an event that was sent, for a
    replay in file order (``--assume-sorted``), where an earlier event can be far later.
    """

    allowed_lateness: dt.timedelta
    not_after: dt.datetime
    stream: StreamTimes = field(default_factory=StreamTimes)

    @classmethod
    def create(
        cls, settings: Settings, stream: StreamTimes, now: dt.datetime | None = None
    ) -> TimeCheck:
        now = now or dt.datetime.now(dt.UTC)
        return cls(
            dt.timedelta(seconds=settings.allowed_lateness),
            now + dt.timedelta(seconds=settings.max_clock_skew),
            StreamTimes(stream.partitions, dict(stream.latest), stream.note),  # advance()s own
        )

    def refuse(self, customer_id: str, occurred_at: dt.datetime) -> tuple[Reason, str] | None:
        """``(reason, detail)`` if the workers would refuse this event, else ``None``."""
        if occurred_at > self.not_after:
            return Reason.FUTURE_EVENT_TIME, f"after {self.not_after.isoformat()}"
        if not self.stream.latest or not self.stream.partitions:
            return None
        partition = partition_for(customer_id.encode(), self.stream.partitions)
        latest = self.stream.latest.get(partition)
        if latest is not None and occurred_at < latest - self.allowed_lateness:
            lateness = duration_text(self.allowed_lateness.total_seconds())
            return (
                Reason.TOO_LATE,
                f"partition {partition}: stream time {latest.isoformat()} - {lateness}",
            )
        return None

    def advance(self, customer_id: str, occurred_at: dt.datetime) -> None:
        """An event was sent: its partition's stream time is at least its time now."""
        if not self.stream.partitions:
            return
        partition = partition_for(customer_id.encode(), self.stream.partitions)
        latest = self.stream.latest.get(partition)
        if latest is None or occurred_at > latest:
            self.stream.latest[partition] = occurred_at


def event_time_of(value: bytes | None) -> dt.datetime | None:
    """The zoned ``occurred_at`` of a JSON record value, or ``None`` (not JSON, none, naive)."""
    if not value:
        return None
    try:
        data = codec.loads(value)
    except codec.JSONDecodeError:
        return None
    text = data.get("occurred_at") if isinstance(data, dict) else None
    if not isinstance(text, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.utcoffset() is not None else None


async def read_stream_times(settings: Settings, timeout: float = 10.0) -> StreamTimes:
    """Per partition, the latest ``occurred_at`` in the last record batch of each input topic.

    A few requests: metadata, end offsets, one fetch per topic-partition from its end
    offset - 1 (Tansu reports the end offset as the last batch's base offset + 1, so that
    is the last batch's first record; Kafka's end - 1 is the last record). Stops after
    ``timeout`` seconds with what it read. Raises the client's errors (no broker).
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.broker_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=int(max(timeout, 1) * 1000),
        max_partition_fetch_bytes=16 * 1024 * 1024,
        **settings.kafka_client_options(),
    )
    try:
        await consumer.start()
        existing = await consumer.topics()
        inputs = [t for t in settings.topics.inputs if t in existing]
        partitions = {t: sorted(consumer.partitions_for_topic(t) or ()) for t in inputs}
        if not inputs:
            return StreamTimes(note="no input topic on the broker yet")
        # the key's partition is the orders topic's (the inputs are co-partitioned)
        stream = StreamTimes(
            len(partitions.get(settings.topics.orders) or max(partitions.values(), key=len))
        )
        tps = [TopicPartition(t, p) for t in inputs for p in partitions[t]]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        todo: dict[Any, int] = {}
        for tp in tps:
            if ends[tp] > starts[tp]:
                consumer.seek(tp, ends[tp] - 1)
                todo[tp] = ends[tp]
            else:
                consumer.pause(tp)
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            fetched = await consumer.getmany(*todo, timeout_ms=200)
            for tp, records in fetched.items():
                for record in records:
                    moment = event_time_of(record.value)
                    latest = stream.latest.get(tp.partition)
                    if moment is not None and (latest is None or moment > latest):
                        stream.latest[tp.partition] = moment
            for tp in list(todo):  # done: read up to the end the fetch reported
                highwater = consumer.highwater(tp)
                if highwater is not None and await consumer.position(tp) >= max(
                    todo[tp], highwater
                ):
                    del todo[tp]
                    consumer.pause(tp)
        filled = sum(1 for tp in tps if ends[tp] > starts[tp])
        stream.note = (
            f"last record batch read on {filled - len(todo)} input topic-partitions "
            f"({len(tps) - filled} empty"
            + (f", {len(todo)} not answered in {timeout:g} s)" if todo else ")")
            if filled
            else f"the input topics are empty ({len(tps)} topic-partitions)"
        )
        return stream
    finally:
        await consumer.stop()


# -- summary -----------------------------------------------------------------------------------


@dataclass
class Summary:
    """What a replay did; :meth:`as_dict` is the ``--json`` form.

    ``events_built`` counts the valid orders, ``refused`` those of them the workers would
    refuse (``too_late``, ``future_event_time``; their rows are in ``rejected`` too), so
    at most built - refused are sent."""

    file: str
    dry_run: bool
    topic: str = ""
    sorted: bool = True
    runs_spilled: int = 0
    stream: StreamTimes = field(default_factory=StreamTimes)
    rows_read: int = 0
    events_built: collections.Counter[str] = field(default_factory=collections.Counter)
    events_sent: collections.Counter[str] = field(default_factory=collections.Counter)
    refused: collections.Counter[Reason] = field(default_factory=collections.Counter)
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
            "sorted": self.sorted,
            "runs_spilled": self.runs_spilled,
            "stream_time_check": self.stream.note,
            "stream_times": {
                str(p): moment.isoformat() for p, moment in sorted(self.stream.latest.items())
            },
            "rows_read": self.rows_read,
            "orders_built": self.orders_built,
            "orders_by_type": dict(sorted(self.events_built.items())),
            "orders_refused": sum(self.refused.values()),
            "orders_refused_by_reason": {r.value: n for r, n in sorted(self.refused.items())},
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
        order = (
            f"event time (occurred_at, ties in file order), {self.runs_spilled:,} "
            f"run{'s' if self.runs_spilled != 1 else ''} spilled to disk"
            if self.sorted
            else "as in the file (--assume-sorted)"
        )
        latest = max(self.stream.latest.values(), default=None)
        stream = self.stream.note + (f"; latest {latest.isoformat()}" if latest else "")
        refused = sum(self.refused.values())
        rows = [
            f"crmstream replay: {self.file}{where}",
            "  INTERRUPTED (Ctrl-C): counts up to that point" if self.interrupted else "",
            f"  FILE BROKE OFF: {self.input_error}" if self.input_error else "",
            f"  BROKER FAILED: {self.broker_error}" if self.broker_error else "",
            f"  order          {order}",
            f"  stream time    {stream}",
            f"  rows read      {self.rows_read:>9,}",
            f"  orders built   {self.orders_built:>9,}  {_by_type(self.events_built)}",
            f"  orders refused {refused:>9,}  {_by_type(_codes(self.refused))}" if refused else "",
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


def _codes(counts: collections.Counter[Reason]) -> collections.Counter[str]:
    return collections.Counter({reason.value: n for reason, n in counts.items()})


def refusal_notices(summary: Summary, check: TimeCheck, *, rejects: bool) -> list[str]:
    """One line per kind of refused order, for stderr before the sending starts."""
    verb = "would not be sent" if summary.dry_run else "not sent"
    where = "see --rejects" if rejects else "--rejects PATH lists them"
    lateness = duration_text(check.allowed_lateness.total_seconds())
    texts = {
        Reason.TOO_LATE: "older than what the workers can still recognise (partition stream "
        f"time - CRM_ALLOWED_LATENESS = {lateness})",
        Reason.FUTURE_EVENT_TIME: "dated after the wall clock + CRM_MAX_CLOCK_SKEW "
        f"({check.not_after.isoformat(timespec='seconds')})",
    }
    notices = []
    for reason, text in texts.items():
        if n := summary.refused[reason]:
            orders = f"{n:,} order is" if n == 1 else f"{n:,} orders are"
            notices.append(f"{orders} {text}: {verb} ({reason.value}), {where}")
    return notices


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
    """Reading, then (with the sort) sending: a rich bar on a TTY stderr, else a plain line
    every 5 s. Reading counts against the file's bytes, sending against the events to send."""

    EVERY = 5.0

    def __init__(self, total_bytes: int, dry_run: bool, enabled: bool = True) -> None:
        self.total = total_bytes
        self.dry_run = dry_run
        self.enabled = enabled
        self.started = self.shown = time.monotonic()
        self.stage = "reading"
        self.done = 0  # events handed to the producer (or merged, in a dry run)
        self.to_send = 0
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self.enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as Bar

            self._bar = Bar(
                TextColumn("replay: {task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[counts]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.stage, total=self.total or None, counts="")
        return self

    def update(self, position: int, summary: Summary) -> None:
        """Reading (or, with ``--assume-sorted``, reading and sending) at ``position``."""
        self._show(position, summary)

    def sending(self, to_send: int, summary: Summary) -> None:
        """The file is read and sorted: from now on count the events sent."""
        self.stage = "sending" if not self.dry_run else "merging"
        self.to_send = to_send
        self.started = time.monotonic()
        if self._bar is not None:
            self._bar.reset(self._task, total=to_send or None, description=self.stage)
        self._show(0, summary, force=True)

    def sent(self, done: int, summary: Summary) -> None:
        self.done = done
        self._show(done, summary)

    def say(self, text: str) -> None:
        """A line the user must see (above the bar on a TTY)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.console.print(f"crmstream: {text}", highlight=False, markup=False)
        else:
            print(f"crmstream: {text}", file=sys.stderr, flush=True)

    def _show(self, completed: int, summary: Summary, force: bool = False) -> None:
        now = time.monotonic()
        if self._bar is not None:
            if force or now - self.shown >= 0.1:
                self.shown = now
                self._bar.update(self._task, completed=completed, counts=self._counts(summary))
            return
        if self.enabled and force:
            self.shown = now
            self.say(f"{self.stage} {self.to_send:,} events in event-time order")
        elif self.enabled and now - self.shown >= self.EVERY:
            self.shown = now
            print(f"crmstream: {self.stage}: {self._counts(summary)}", file=sys.stderr, flush=True)

    def _counts(self, summary: Summary) -> str:
        seconds = max(time.monotonic() - self.started, 1e-6)
        if self.stage != "reading":
            done = "merged" if self.dry_run else "sent"
            return (
                f"{self.done:,} of {self.to_send:,} events {done} "
                f"({self.done / seconds:,.0f} events/s)"
            )
        rate = f"({summary.rows_read / seconds:,.0f} rows/s)"
        read = f"{summary.rows_read:,} rows read, {summary.orders_built:,} orders built"
        if summary.sorted:
            return f"{read}, runs spilled: {summary.runs_spilled:,} {rate}"
        if self.dry_run:
            return f"{read} {rate}"
        return f"{read}, {sum(summary.events_sent.values()):,} events sent {rate}"

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

    async def send(self, key: bytes, value: bytes, event_type: str) -> None:
        future = await self.producer.send(self.topic, value, key=key)
        self.pending.append((future, event_type))
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
    dry_run: bool | None = None,
    assume_sorted: bool = False,
    sort_memory: int = DEFAULT_SORT_MEMORY_MB * 1024 * 1024,
    sort_dir: str | Path | None = None,
    rejects: RejectsWriter | None = None,
    progress: Progress | None = None,
    stop: asyncio.Event | None = None,
    on_connected: Callable[[], None] | None = None,
    connect_timeout: float = 30.0,
    max_in_flight: int = 2000,
    now: dt.datetime | None = None,
) -> Summary:
    """Read ``source``, build and validate every order, send each to the orders topic in
    event-time order (an external sort; ``assume_sorted``: in file order, as it is read).

    First the input topics' stream times are read from the broker (:func:`read_stream_times`);
    orders the workers would refuse (:class:`TimeCheck`) are rejected here and not sent.
    A dry run (``dry_run``, or ``settings=None``) sends nothing; it reads the stream times
    if ``settings`` names a broker that answers, else it says the check was skipped.

    Stops early when ``stop`` is set (``interrupted``), the file breaks off
    (``input_error``) or the broker fails (``broker_error``); in every case the summary
    counts what the broker acknowledged. With the sort nothing is sent before the whole
    file is read, so a file that breaks off, or a stop while reading, sends nothing.
    """
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    from schemas.errors import BrokerUnreachable
    from streams.topics import ensure_topics

    dry = settings is None if dry_run is None else dry_run
    summary = Summary(str(source.path), dry_run=dry, sorted=not assume_sorted)
    progress = progress or Progress(source.size, dry, enabled=False)
    producer: Any = None
    sender: _Sender | None = None

    def counted(rows: Iterator[SourceRow]) -> Iterator[SourceRow]:
        for row in rows:
            summary.rows_read += 1
            yield row

    def reject(rejection: Rejection) -> None:
        summary.reject(rejection)
        if rejects is not None:
            rejects.write(rejection)

    async def read(check: TimeCheck, accept: Callable[[ReplayEvent], Awaitable[None]]) -> None:
        """Build every order; reject rows and refused orders, ``accept`` the others."""
        try:
            for n, outcome in enumerate(build_events(counted(source.rows), options), start=1):
                if isinstance(outcome, Rejection):
                    reject(outcome)
                else:
                    summary.events_built[outcome.event_type] += 1
                    refusal = check.refuse(outcome.customer_id, outcome.occurred_at)
                    if refusal is None:
                        await accept(outcome)
                    else:
                        summary.refused[refusal[0]] += 1
                        raws = outcome.raw or tuple([] for _ in outcome.lines)
                        for line, raw in zip(outcome.lines, raws, strict=True):
                            reject(Rejection(line, *refusal, raw))
                progress.update(source.position, summary)
                if n % 500 == 0:
                    await asyncio.sleep(0)  # let Ctrl-C and the producer's sender run
                if stop is not None and stop.is_set():
                    summary.interrupted = True
                    return
        except InputFileError as exc:
            summary.input_error = str(exc)

    try:
        if settings is not None and not dry:
            summary.topic = settings.topics.orders
            await ensure_topics(settings, timeout=connect_timeout)
            summary.stream = await read_stream_times(settings)
            producer = AIOKafkaProducer(
                bootstrap_servers=settings.broker_bootstrap,
                linger_ms=20,
                **settings.kafka_client_options(),
            )
            await producer.start()
            sender = _Sender(producer, summary.topic, summary, max_in_flight)
        elif settings is not None:
            summary.stream = await _stream_times_if_reachable(settings)
        else:
            summary.stream.note = "skipped (dry run without broker settings)"
        if summary.stream.note.startswith("skipped"):
            progress.say(f"the too_late check is {summary.stream.note}")
        if not summary.stream.partitions:  # the topics do not exist yet: as they will be made
            summary.stream.partitions = (settings or Settings()).partitions
        check = TimeCheck.create(settings or Settings(), summary.stream, now)
        if on_connected is not None:
            on_connected()

        if assume_sorted:  # file order: send as read; what was sent moves stream time

            async def send_now(event: ReplayEvent) -> None:
                check.advance(event.customer_id, event.occurred_at)
                if sender is not None:
                    await sender.send(event.key, event.value, event.event_type)

            await read(check, send_now)
            for notice in refusal_notices(summary, check, rejects=rejects is not None):
                progress.say(notice)
        else:
            with ExternalSort(sort_memory, directory=sort_dir) as sorter:

                async def keep(event: ReplayEvent) -> None:
                    sorter.add(sort_item(event))
                    summary.runs_spilled = sorter.runs_spilled

                await read(check, keep)
                if summary.input_error is not None:
                    summary.input_error += "; nothing sent (the rest could hold earlier events)"
                if not summary.interrupted and summary.input_error is None:
                    for notice in refusal_notices(summary, check, rejects=rejects is not None):
                        progress.say(notice)
                    await _send_sorted(sorter, sender, summary, progress, stop)
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


async def _send_sorted(
    sorter: ExternalSort,
    sender: _Sender | None,
    summary: Summary,
    progress: Progress,
    stop: asyncio.Event | None,
) -> None:
    """Merge the sorted runs and send them in that order (only merge them in a dry run)."""
    progress.sending(sorter.count, summary)
    for n, (_, _, event_type, key, value) in enumerate(sorter.merged(), start=1):
        if sender is not None:
            await sender.send(key.encode(), value, event_type)
        progress.sent(n, summary)
        if n % 500 == 0:
            await asyncio.sleep(0)
        if stop is not None and stop.is_set():
            summary.interrupted = True
            return


async def _stream_times_if_reachable(settings: Settings, timeout: float = 5.0) -> StreamTimes:
    """A dry run's look at the broker: the stream times, or a note that it was skipped."""
    from aiokafka.errors import KafkaError

    client_log = logging.getLogger("aiokafka")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)  # one line from us, not the client's retries
    try:
        return await asyncio.wait_for(read_stream_times(settings, timeout), timeout * 2)
    except (KafkaError, OSError, TimeoutError):
        return StreamTimes(
            note=f"skipped: no broker reachable at {settings.broker_bootstrap} (dry run)"
        )
    finally:
        client_log.setLevel(level)
