"""``crmstream replay``: export rows -> order events or rejections, with no broker.

Rows are written as the UCI export writes them (CSV text, the UCI header) and
read back through the same reader the command uses; each test gives only the
cells its behaviour is about.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import gzip
import io
import random
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from schemas import codec
from schemas.errors import ConfigError
from schemas.registry import VALIDATORS
from streams.settings import Settings
from streams.tools import replay as replay_module
from streams.tools.embedded import free_port
from streams.tools.replay import (
    REASON_TEXT,
    UCI_MAP,
    UCI_MAP_SPEC,
    ExternalSort,
    Progress,
    Reason,
    Rejection,
    RejectsWriter,
    ReplayEvent,
    ReplayOptions,
    SortItem,
    Source,
    SourceRow,
    StreamTimes,
    Summary,
    TimeCheck,
    build_events,
    check_columns,
    csv_rows,
    duration_text,
    event_time_of,
    format_of,
    normalise_customer_id,
    parse_map,
    partition_for,
    refusal_notices,
    replay,
    sort_item,
)

SLICE = Path(__file__).resolve().parents[1] / "data" / "online_retail_slice.csv"
UCI_HEADER = [
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
]
LINE: dict[str, str] = {
    "InvoiceNo": "536365",
    "StockCode": "85123A",
    "Description": "WHITE HANGING HEART T-LIGHT HOLDER",
    "Quantity": "6",
    "InvoiceDate": "2010-12-01 08:26:00",
    "UnitPrice": "2.55",
    "CustomerID": "17850.0",
    "Country": "United Kingdom",
}

Export = Callable[..., list[SourceRow]]


@pytest.fixture
def export() -> Export:
    """``export(*lines) -> rows``: each line is a dict of UCI cells overriding :data:`LINE`."""

    def make(*lines: dict[str, str]) -> list[SourceRow]:
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(UCI_HEADER)
        for line in lines:
            cells = {**LINE, **line}
            writer.writerow([cells[c] for c in UCI_HEADER])
        text.seek(0)
        header, rows = csv_rows(text)
        assert header == UCI_HEADER
        return list(rows)

    return make


def outcomes(rows: list[SourceRow], options: ReplayOptions | None = None) -> list[Any]:
    return list(build_events(rows, options or ReplayOptions()))


def events_of(results: list[Any]) -> list[ReplayEvent]:
    return [r for r in results if isinstance(r, ReplayEvent)]


def rejections_of(results: list[Any]) -> list[Rejection]:
    return [r for r in results if isinstance(r, Rejection)]


def reasons(results: list[Any]) -> list[tuple[int, Reason]]:
    return [(r.line, r.reason) for r in rejections_of(results)]


# -- the map -------------------------------------------------------------------------------


def test_default_map_is_the_uci_columns():
    assert parse_map(UCI_MAP_SPEC) == UCI_MAP
    assert ReplayOptions().columns == UCI_MAP


def test_map_parses_targets_and_trims_spaces():
    columns = parse_map(" customer_id = Cust , order_id=Order,occurred_at=When,amount=Total ")

    assert columns == {
        "customer_id": "Cust",
        "order_id": "Order",
        "occurred_at": "When",
        "amount": "Total",
    }


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("customer=Cust,order_id=O,occurred_at=T,price=P", "'customer'"),
        ("order_id=O,occurred_at=T,price=P", "customer_id"),
        ("customer_id=C,order_id=O,occurred_at=T", "'price'"),
        ("customer_id=C,order_id=O,occurred_at,price=P", "'occurred_at'"),
        ("customer_id=C,customer_id=D,order_id=O,occurred_at=T,price=P", "'customer_id'"),
        ("customer_id=,order_id=O,occurred_at=T,price=P", "'customer_id='"),
    ],
)
def test_a_bad_map_is_a_config_error_naming_the_target(spec, named):
    with pytest.raises(ConfigError) as error:
        parse_map(spec)

    assert error.value.key == "--map"
    assert named in str(error.value)


def test_a_mapped_column_missing_from_the_header_names_column_and_target():
    options = ReplayOptions.create("customer_id=Cust,order_id=InvoiceNo,occurred_at=D,price=P")

    with pytest.raises(ConfigError) as error:
        check_columns(options, UCI_HEADER, "export.csv")

    assert "'Cust' (for customer_id)" in str(error.value)
    assert "export.csv" in str(error.value)


def test_the_default_map_fits_the_uci_header():
    check_columns(ReplayOptions(), UCI_HEADER, "export.csv")  # no error


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"timezone": "Mars/Olympus"}, "--timezone"), ({"currency": "gbp"}, "--currency")],
)
def test_bad_options_name_the_option(kwargs, key):
    with pytest.raises(ConfigError) as error:
        ReplayOptions.create(**kwargs)

    assert error.value.key == key


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("orders.csv", "csv"),
        ("orders.csv.gz", "csv"),
        ("orders.jsonl", "jsonl"),
        ("orders.ndjson.gz", "jsonl"),
        ("orders.json", "jsonl"),
        ("orders.txt", "csv"),
    ],
)
def test_format_follows_the_suffix(name, expected):
    assert format_of(Path(name)) == expected
    assert format_of(Path(name), "csv") == "csv"


# -- customer ids, grouping, event types ------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("17850.0", "17850"),
        ("17850.00", "17850"),
        (" 17850 ", "17850"),
        ("17850", "17850"),
        ("17850.5", "17850.5"),
        ("cust-7.0", "cust-7.0"),
    ],
)
def test_customer_ids_written_as_floats_are_read_as_integers(raw, expected):
    assert normalise_customer_id(raw) == expected


def test_consecutive_lines_of_one_invoice_become_one_order_placed(export):
    rows = export(
        {"StockCode": "A", "Quantity": "6", "UnitPrice": "2.55"},
        {"StockCode": "B", "Quantity": "2", "UnitPrice": "3.39"},
        {"StockCode": "A", "Quantity": "1", "UnitPrice": "2.55"},  # not merged with line 2
        {"InvoiceNo": "536366", "StockCode": "C", "Quantity": "1", "UnitPrice": "1.85"},
    )

    first, second = events_of(outcomes(rows))

    assert first.event_type == "order.placed"
    assert first.lines == (2, 3, 4)
    assert first.key == b"17850"
    assert first.payload == {
        "event_id": "replay:order.placed:536365",
        "customer_id": "17850",
        "occurred_at": "2010-12-01T08:26:00+00:00",
        "schema_version": 1,
        "type": "order.placed",
        "order_id": "536365",
        "amount": 24.63,  # 6 x 2.55 + 2 x 3.39 + 1 x 2.55
        "currency": "GBP",
        "items": [
            {"sku": "A", "category": "uncategorised", "qty": 6, "price": 2.55},
            {"sku": "B", "category": "uncategorised", "qty": 2, "price": 3.39},
            {"sku": "A", "category": "uncategorised", "qty": 1, "price": 2.55},
        ],
        "region": "United Kingdom",
    }
    assert second.order_id == "536366"
    assert second.lines == (5,)


def test_a_return_invoice_becomes_order_returned_with_positive_amounts(export):
    rows = export(
        {"InvoiceNo": "C536379", "StockCode": "D", "Quantity": "-1", "UnitPrice": "27.50"},
        {"InvoiceNo": "C536379", "StockCode": "22556", "Quantity": "-12", "UnitPrice": "1.65"},
    )

    (event,) = events_of(outcomes(rows))

    assert event.event_type == "order.returned"
    assert event.payload["event_id"] == "replay:order.returned:C536379"
    assert event.payload["amount"] == event.payload["refund_amount"] == 47.3
    assert [i["qty"] for i in event.payload["items"]] == [1, 12]
    VALIDATORS["orders"].validate_python(event.payload)  # the contract holds


def test_the_return_prefix_is_an_option(export):
    rows = export({"InvoiceNo": "R-9", "Quantity": "-1"})

    assert reasons(outcomes(rows)) == [(2, Reason.STOCK_ADJUSTMENT)]
    (event,) = events_of(outcomes(rows, ReplayOptions.create(return_prefix="R-")))
    assert event.event_type == "order.returned"


def test_every_event_passes_the_orders_contract(export):
    rows = export({}, {"InvoiceNo": "C1", "Quantity": "-2"}, {"InvoiceNo": "536400"})

    events = events_of(outcomes(rows))

    types = sorted(VALIDATORS["orders"].validate_python(codec.loads(e.value)).type for e in events)
    assert types == ["order.placed", "order.placed", "order.returned"]


# -- amounts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "amount"),
    [
        ([("1", "1.005")], 1.01),  # float rounding would give 1.0
        ([("1", "0.125")], 0.13),  # half up, not half even (0.12)
        ([("3", "0.1"), ("1", "0.2")], 0.5),
        ([("1", "2.675")], 2.68),  # float rounding would give 2.67
        ([("7", "0.001"), ("1", "0.004")], 0.01),  # 0.011 -> 0.01
    ],
)
def test_amount_is_the_decimal_sum_rounded_half_up_to_cents(export, lines, amount):
    rows = export(*({"Quantity": q, "UnitPrice": p} for q, p in lines))

    (event,) = events_of(outcomes(rows))

    assert event.payload["amount"] == amount


def test_a_mapped_amount_column_is_the_line_total(tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text(
        "order,customer,when,sku,qty,total\n"
        "o-1,c-1,2024-03-01T10:00:00+01:00,S1,3,10.00\n"
        "o-1,c-1,2024-03-01T10:00:00+01:00,S2,1,0.005\n"
    )
    options = ReplayOptions.create(
        "order_id=order,customer_id=customer,occurred_at=when,sku=sku,qty=qty,amount=total"
    )

    with Source(path) as source:
        (event,) = events_of(outcomes(list(source.rows), options))

    assert event.payload["amount"] == 10.01
    assert event.payload["occurred_at"] == "2024-03-01T10:00:00+01:00"  # its own zone kept
    assert [i["price"] for i in event.payload["items"]] == [3.33, 0.01]  # derived per unit
    assert "region" not in event.payload


# -- time --------------------------------------------------------------------------------------


def test_naive_times_get_the_timezone_option(export):
    rows = export({"InvoiceDate": "2011-06-01 10:00:00"})

    (event,) = events_of(outcomes(rows, ReplayOptions.create(timezone="Europe/London")))

    assert event.payload["occurred_at"] == "2011-06-01T10:00:00+01:00"


def test_a_date_format_reads_other_layouts(export):
    rows = export({"InvoiceDate": "01/12/2010 08:26"})
    options = ReplayOptions.create(date_format="%d/%m/%Y %H:%M")

    (event,) = events_of(outcomes(rows, options))
    (rejected,) = rejections_of(outcomes(rows))

    assert event.payload["occurred_at"] == "2010-12-01T08:26:00+00:00"
    assert rejected.reason == Reason.BAD_TIMESTAMP


def test_an_order_happens_at_its_first_line(export):
    rows = export({"InvoiceDate": "2010-12-01 08:26:00"}, {"InvoiceDate": "2010-12-01 08:27:00"})

    (event,) = events_of(outcomes(rows))

    assert event.payload["occurred_at"] == "2010-12-01T08:26:00+00:00"


# -- rejections ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cells", "reason", "detail"),
    [
        ({"CustomerID": ""}, Reason.MISSING_CUSTOMER_ID, ""),
        ({"CustomerID": "  "}, Reason.MISSING_CUSTOMER_ID, ""),
        ({"InvoiceDate": "yesterday"}, Reason.BAD_TIMESTAMP, "not ISO 8601"),
        ({"InvoiceDate": ""}, Reason.BAD_TIMESTAMP, "not ISO 8601"),
        ({"Quantity": "six"}, Reason.BAD_NUMBER, "quantity"),
        ({"Quantity": "2.5"}, Reason.BAD_NUMBER, "quantity"),
        ({"UnitPrice": "1,20"}, Reason.BAD_NUMBER, "price"),
        ({"UnitPrice": "NaN"}, Reason.BAD_NUMBER, "price"),
        ({"UnitPrice": "-11062.06"}, Reason.NEGATIVE_PRICE, ""),
        ({"Quantity": "0"}, Reason.ZERO_QUANTITY, ""),
        ({"Quantity": "-3"}, Reason.STOCK_ADJUSTMENT, ""),
        ({"InvoiceNo": ""}, Reason.MISSING_ORDER_ID, ""),
        ({"Quantity": "100001"}, Reason.INVALID_EVENT, "items.0.qty: "),
        ({"StockCode": ""}, Reason.INVALID_EVENT, "items.0.sku: "),
    ],
)
def test_a_row_that_cannot_be_mapped_is_rejected_with_its_reason(export, cells, reason, detail):
    (rejection,) = outcomes(export(cells))

    assert isinstance(rejection, Rejection)
    assert (rejection.line, rejection.reason) == (2, reason)
    assert rejection.detail.startswith(detail)
    assert REASON_TEXT[reason] in rejection.text


def test_contract_failures_name_the_field_but_never_echo_the_value(export):
    secret = "S" * 70
    (rejection,) = outcomes(export({"Country": secret}))

    assert rejection.reason == Reason.INVALID_EVENT
    assert rejection.detail.startswith("region: ")
    assert secret not in rejection.text


def test_a_bad_line_rejects_its_whole_order_and_says_why_for_each_line(export):
    rows = export({"StockCode": "A"}, {"UnitPrice": "abc"}, {"StockCode": "C"}, {"InvoiceNo": "9"})

    results = outcomes(rows)

    assert reasons(results) == [
        (2, Reason.ORDER_REJECTED),
        (3, Reason.BAD_NUMBER),
        (4, Reason.ORDER_REJECTED),
    ]
    assert [e.order_id for e in events_of(results)] == ["9"]


def test_mixed_signs_reject_every_line_of_the_order(export):
    rows = export({"Quantity": "2"}, {"Quantity": "-1"}, {"Quantity": "3"})

    assert reasons(outcomes(rows)) == [(n, Reason.MIXED_SIGNS) for n in (2, 3, 4)]


def test_a_return_invoice_with_mixed_signs_is_rejected_too(export):
    rows = export({"InvoiceNo": "C1", "Quantity": "-2"}, {"InvoiceNo": "C1", "Quantity": "1"})

    assert reasons(outcomes(rows)) == [(2, Reason.MIXED_SIGNS), (3, Reason.MIXED_SIGNS)]


def test_a_stock_adjustment_is_rejected_whatever_else_is_missing(export):
    # In the UCI data every stock adjustment also lacks a customer id: the adjustment
    # is the more useful reason (it is not a sale at all).
    rows = export({"Quantity": "-5", "CustomerID": "", "UnitPrice": "0"})

    assert reasons(outcomes(rows)) == [(2, Reason.STOCK_ADJUSTMENT)]


def test_lines_of_one_order_naming_two_customers_are_rejected(export):
    rows = export({"CustomerID": "17850.0"}, {"CustomerID": "13047.0"})

    assert reasons(outcomes(rows)) == [
        (2, Reason.INCONSISTENT_ORDER),
        (3, Reason.INCONSISTENT_ORDER),
    ]


def test_the_same_customer_as_float_and_integer_is_one_customer(export):
    rows = export({"CustomerID": "17850.0"}, {"CustomerID": "17850"})

    (event,) = events_of(outcomes(rows))

    assert event.customer_id == "17850"


def test_an_order_that_comes_back_later_is_rejected_not_sent_twice(export):
    rows = export({"InvoiceNo": "1"}, {"InvoiceNo": "2"}, {"InvoiceNo": "1"}, {"InvoiceNo": "1"})

    results = outcomes(rows)

    assert [e.order_id for e in events_of(results)] == ["1", "2"]
    assert reasons(results) == [
        (4, Reason.ORDER_NOT_CONSECUTIVE),
        (5, Reason.ORDER_NOT_CONSECUTIVE),
    ]


def test_rows_without_an_order_id_do_not_split_the_order_around_them(export):
    rows = export({"StockCode": "A"}, {"InvoiceNo": " "}, {"StockCode": "B"})

    results = outcomes(rows)

    (event,) = events_of(results)
    assert event.lines == (2, 4)
    assert reasons(results) == [(3, Reason.MISSING_ORDER_ID)]


def test_a_row_with_the_wrong_number_of_fields_is_unreadable():
    text = io.StringIO("InvoiceNo,CustomerID\n1,2\n3,4,5\n6\n")

    _, rows = csv_rows(text)
    options = ReplayOptions.create(
        "order_id=InvoiceNo,customer_id=CustomerID,occurred_at=X,amount=Y"
    )
    results = outcomes(list(rows), options)

    assert reasons(results)[-2:] == [(3, Reason.UNREADABLE_LINE), (4, Reason.UNREADABLE_LINE)]
    assert results[-1].raw == ["6"]


def test_every_row_ends_in_exactly_one_event_or_rejection(export):
    rows = export(
        {},
        {},
        {"InvoiceNo": "2", "CustomerID": ""},
        {"InvoiceNo": "C3", "Quantity": "-1"},
        {"InvoiceNo": "4", "Quantity": "-1"},
        {"InvoiceNo": "5", "UnitPrice": "x"},
        {"InvoiceNo": "5"},
    )

    results = outcomes(rows)

    accounted = sorted(
        [line for e in events_of(results) for line in e.lines]
        + [r.line for r in rejections_of(results)]
    )
    assert accounted == [row.line for row in rows]


# -- determinism ------------------------------------------------------------------------------


def test_replaying_the_same_export_gives_the_same_ids_and_bytes(export):
    rows = export({}, {"InvoiceNo": "C536379", "Quantity": "-1"})

    first = [(e.key, e.value) for e in events_of(outcomes(rows))]
    again = [(e.key, e.value) for e in events_of(outcomes(rows))]

    assert first == again
    assert [codec.loads(v)["event_id"] for _, v in first] == [
        "replay:order.placed:536365",
        "replay:order.returned:C536379",
    ]


# -- files -------------------------------------------------------------------------------------


def test_gzip_csv_and_json_lines_give_the_same_events(tmp_path):
    lines = [dict(LINE), {**LINE, "InvoiceNo": "C9", "Quantity": "-2"}]
    csv_gz = tmp_path / "export.csv.gz"
    with gzip.open(csv_gz, "wt", newline="") as f:
        writer = csv.DictWriter(f, UCI_HEADER)
        writer.writeheader()
        writer.writerows(lines)
    jsonl = tmp_path / "export.jsonl"
    jsonl.write_text(
        "\n".join(
            codec.dumps(
                {
                    **line,
                    "Quantity": int(line["Quantity"]),
                    "UnitPrice": 2.55,
                    "CustomerID": 17850.0,
                }
            ).decode()
            for line in lines
        )
        + "\n\n"  # a blank line is not a row
    )

    def payloads(path: Path) -> list[dict[str, Any]]:
        with Source(path) as source:
            assert source.columns == UCI_HEADER
            return [e.payload for e in events_of(outcomes(list(source.rows)))]

    assert payloads(csv_gz) == payloads(jsonl)
    assert [p["customer_id"] for p in payloads(jsonl)] == ["17850", "17850"]


def test_a_json_lines_record_that_is_not_an_object_is_rejected(tmp_path):
    path = tmp_path / "export.jsonl"
    path.write_text(codec.dumps(LINE).decode() + "\n[1, 2]\n{not json\n")

    with Source(path) as source:
        results = outcomes(list(source.rows))

    assert reasons(results) == [(2, Reason.UNREADABLE_LINE), (3, Reason.UNREADABLE_LINE)]
    assert len(events_of(results)) == 1


def test_a_truncated_gzip_file_stops_the_replay_with_what_was_built(tmp_path):
    whole = gzip.compress(SLICE.read_bytes())
    path = tmp_path / "export.csv.gz"
    path.write_bytes(whole[: len(whole) // 2])

    with Source(path) as source:
        summary = asyncio.run(replay(source, ReplayOptions(), None))

    assert summary.input_error is not None
    assert "truncated" in summary.input_error
    assert 0 < summary.orders_built < 401


def test_rejects_file_keeps_the_original_columns_and_can_be_replayed(tmp_path, export):
    source_path = tmp_path / "export.csv"
    source_path.write_text(
        ",".join(UCI_HEADER) + "\n" + ",".join({**LINE, "UnitPrice": "abc"}.values()) + "\n"
    )
    rejects_path = tmp_path / "rejects.csv"

    with Source(source_path) as source:
        writer = RejectsWriter(rejects_path, source)
        for outcome in build_events(source.rows, ReplayOptions()):
            writer.write(outcome)  # type: ignore[arg-type]
        writer.close()

    with open(rejects_path, newline="") as f:
        (row,) = csv.DictReader(f)
    assert row["reject_line"] == "2"
    assert row["reject_reason"] == "bad_number"
    assert row["reject_detail"] == "price"
    assert {k: row[k] for k in UCI_HEADER} == {**LINE, "UnitPrice": "abc"}

    fixed = rejects_path.read_text().replace(",abc,", ",2.55,")
    rejects_path.write_text(fixed)
    with Source(rejects_path) as again:  # the extra columns are harmless
        (event,) = events_of(outcomes(list(again.rows)))
    assert event.payload["amount"] == 15.3


def test_the_rejects_file_cannot_overwrite_the_input(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text(",".join(UCI_HEADER) + "\n")

    with Source(path) as source, pytest.raises(ConfigError) as error:
        RejectsWriter(path, source)

    assert error.value.key == "--rejects"
    assert path.read_text()  # untouched


# -- the summary, the dry run over the slice, a broker that is not there ------------------


def test_summary_keeps_counts_and_the_first_three_lines_per_reason():
    summary = Summary("x.csv", dry_run=True)
    for line in (5, 9, 12, 40):
        summary.reject(Rejection(line, Reason.MISSING_CUSTOMER_ID, "", []))

    data = summary.as_dict()

    assert data["rejected_by_reason"]["missing_customer_id"]["rows"] == 4
    assert data["rejected_by_reason"]["missing_customer_id"]["first_lines"] == [5, 9, 12]
    assert "lines 5, 9, 12, ..." in summary.render()


def slice_expectations() -> dict[str, Any]:
    """What the dry run must find in the slice, counted here with nothing but csv."""
    with open(SLICE, newline="") as f:
        rows = list(csv.DictReader(f))
    adjustments = [r for r in rows if int(r["Quantity"]) < 0 and not r["InvoiceNo"].startswith("C")]
    no_customer = [r for r in rows if not r["CustomerID"] and r not in adjustments]
    invoices = [r["InvoiceNo"] for r in rows if r["CustomerID"]]
    runs = [inv for i, inv in enumerate(invoices) if i == 0 or inv != invoices[i - 1]]
    assert len(runs) == len(set(runs))  # every invoice's lines are consecutive
    totals: Counter[str] = Counter()
    for r in rows:
        if r["CustomerID"]:
            totals[r["InvoiceNo"]] += abs(Decimal(r["Quantity"]) * Decimal(r["UnitPrice"]))
    return {
        "rows": len(rows),
        "stock_adjustment": len(adjustments),
        "missing_customer_id": len(no_customer),
        "placed": sum(1 for inv in runs if not inv.startswith("C")),
        "returned": sum(1 for inv in runs if inv.startswith("C")),
        "amounts": {
            inv: float(t.quantize(Decimal("0.01"), rounding="ROUND_HALF_UP"))
            for inv, t in totals.items()
        },
    }


def test_dry_run_over_the_slice_gives_the_counts_of_the_file():
    expected = slice_expectations()

    with Source(SLICE) as source:
        summary = asyncio.run(replay(source, ReplayOptions(), None))
    with Source(SLICE) as source:
        seen = events_of(list(build_events(source.rows, ReplayOptions())))

    assert summary.rows_read == expected["rows"]
    assert summary.rejected == {
        Reason.MISSING_CUSTOMER_ID: expected["missing_customer_id"],
        Reason.STOCK_ADJUSTMENT: expected["stock_adjustment"],
    }
    assert summary.events_built == {
        "order.placed": expected["placed"],
        "order.returned": expected["returned"],
    }
    assert summary.events_sent == {}
    assert summary.rows_read == sum(len(e.lines) for e in seen) + summary.rows_rejected
    assert {e.order_id: e.payload["amount"] for e in seen} == expected["amounts"]
    assert expected["stock_adjustment"] > 0 and expected["returned"] > 0  # the slice covers both


def test_an_unreachable_broker_is_reported_in_the_summary_not_raised(tmp_path):
    port = free_port()  # closed again: nothing listens there
    settings = Settings(kafka_broker=f"kafka://127.0.0.1:{port}")

    with Source(SLICE) as source:
        summary = asyncio.run(replay(source, ReplayOptions(), settings, connect_timeout=0.5))

    assert summary.broker_error is not None
    assert "cannot reach the Kafka broker" in summary.broker_error
    assert summary.events_sent == {}
    assert summary.rows_read == 0  # nothing read before the broker answered


# -- event-time order: the external sort -----------------------------------------------------


def in_time_order(events: list[ReplayEvent], memory: int = 1 << 20, **kw: Any) -> list[SortItem]:
    """``events`` through the sort as the replay uses it."""
    with ExternalSort(memory, **kw) as sorter:
        for event in events:
            sorter.add(sort_item(event))
        return list(sorter.merged())


def order_ids(items: list[SortItem]) -> list[str]:
    return [codec.loads(value)["order_id"] for *_, value in items]


def test_an_export_ordered_by_customer_comes_out_in_event_time_order(export):
    rows = export(  # customer A's whole history, then B's, then C's
        {"InvoiceNo": "a1", "CustomerID": "A", "InvoiceDate": "2011-01-01 10:00:00"},
        {"InvoiceNo": "a2", "CustomerID": "A", "InvoiceDate": "2011-03-01 10:00:00"},
        {"InvoiceNo": "a3", "CustomerID": "A", "InvoiceDate": "2011-06-01 10:00:00"},
        {"InvoiceNo": "b1", "CustomerID": "B", "InvoiceDate": "2011-02-01 10:00:00"},
        {"InvoiceNo": "b2", "CustomerID": "B", "InvoiceDate": "2011-05-01 10:00:00"},
        {"InvoiceNo": "c1", "CustomerID": "C", "InvoiceDate": "2010-12-24 10:00:00"},
        {"InvoiceNo": "c2", "CustomerID": "C", "InvoiceDate": "2011-04-01 10:00:00"},
    )

    items = in_time_order(events_of(outcomes(rows)))

    assert order_ids(items) == ["c1", "a1", "b1", "a2", "c2", "b2", "a3"]
    assert [at for at, *_ in items] == sorted(at for at, *_ in items)


def test_orders_at_the_same_time_keep_their_file_order(export):
    rows = export(
        {"InvoiceNo": "z", "CustomerID": "Z", "InvoiceDate": "2011-01-01 10:00:00"},
        {"InvoiceNo": "a", "CustomerID": "A", "InvoiceDate": "2011-01-01 10:00:00"},
        {"InvoiceNo": "early", "CustomerID": "E", "InvoiceDate": "2011-01-01 09:00:00"},
        {"InvoiceNo": "m", "CustomerID": "M", "InvoiceDate": "2011-01-01 10:00:00"},
    )

    items = in_time_order(events_of(outcomes(rows)))

    assert order_ids(items) == ["early", "z", "a", "m"]  # ties: the order's first line


def test_time_order_is_the_instant_not_the_text(export):
    rows = export(
        {"InvoiceNo": "utc", "CustomerID": "U", "InvoiceDate": "2011-01-01T09:30:00+00:00"},
        {"InvoiceNo": "paris", "CustomerID": "P", "InvoiceDate": "2011-01-01T10:00:00+01:00"},
    )

    assert order_ids(in_time_order(events_of(outcomes(rows)))) == ["paris", "utc"]


def slice_items() -> list[SortItem]:
    with Source(SLICE) as source:
        return [sort_item(e) for e in events_of(outcomes(list(source.rows)))]


def test_a_tiny_run_size_spills_several_runs_and_gives_the_in_memory_order(tmp_path):
    items = slice_items()
    shuffled = items[:]
    random.Random(11).shuffle(shuffled)

    with ExternalSort(20_000, fan_in=3, directory=tmp_path) as sorter:
        for item in shuffled:
            sorter.add(item)
        spilled = sorter.runs_spilled
        merged = list(sorter.merged())  # more runs than fan_in: merged in several passes

    assert spilled >= 10
    assert merged == sorted(items)  # the same bytes, in the same order
    assert list(tmp_path.iterdir()) == []  # the spill directory is gone


def test_everything_that_fits_in_memory_is_never_spilled(tmp_path):
    with ExternalSort(1 << 30, directory=tmp_path) as sorter:
        for item in slice_items():
            sorter.add(item)
        merged = list(sorter.merged())

    assert sorter.runs_spilled == 0 and sorter.path is None
    assert merged == sorted(slice_items())


def test_spill_files_are_removed_also_when_the_replay_breaks_off(tmp_path):
    with pytest.raises(KeyboardInterrupt), ExternalSort(1, directory=tmp_path) as sorter:
        for item in slice_items()[:5]:
            sorter.add(item)
        assert sorter.path is not None
        assert len(list(sorter.path.glob("run-*.jsonl"))) == 5  # JSON lines, one file a run
        merging = sorter.merged()
        next(merging)  # the spill files are open
        raise KeyboardInterrupt

    assert not sorter.path.exists()
    assert list(tmp_path.iterdir()) == []


def test_the_dry_run_sorts_with_spills_and_keeps_the_slice_figures(tmp_path):
    with Source(SLICE) as source:
        summary = asyncio.run(
            replay(source, ReplayOptions(), None, sort_memory=50_000, sort_dir=tmp_path)
        )

    assert summary.sorted and summary.runs_spilled >= 5
    assert summary.rows_read == 3883
    assert summary.orders_built == 401 and summary.rows_rejected == 35
    assert summary.refused == {}
    assert list(tmp_path.iterdir()) == []
    assert f"{summary.runs_spilled} runs spilled to disk" in summary.render()
    assert summary.as_dict()["runs_spilled"] == summary.runs_spilled


def test_a_stop_while_reading_sends_nothing_and_leaves_no_spill_files(tmp_path):
    stop = asyncio.Event()
    stop.set()

    with Source(SLICE) as source:
        summary = asyncio.run(
            replay(source, ReplayOptions(), None, sort_memory=1, sort_dir=tmp_path, stop=stop)
        )

    assert summary.interrupted
    assert summary.events_sent == {}
    assert list(tmp_path.iterdir()) == []


def test_assume_sorted_skips_the_sort(tmp_path):
    with Source(SLICE) as source:
        summary = asyncio.run(
            replay(source, ReplayOptions(), None, assume_sorted=True, sort_dir=tmp_path)
        )

    assert not summary.sorted and summary.runs_spilled == 0
    assert summary.orders_built == 401 and summary.refused == {}
    assert "--assume-sorted" in summary.render()


# -- what the workers would refuse: too_late, future_event_time ---------------------------------

NOW = dt.datetime(2012, 1, 1, tzinfo=dt.UTC)
STREAM_TIME = dt.datetime(2011, 12, 9, 12, 0, tzinfo=dt.UTC)
WEEK = dt.timedelta(days=7)


def customer_on(partition: int, partitions: int = 4) -> str:
    """A customer id whose key Kafka's default partitioner puts on ``partition``."""
    return next(
        f"c{i}" for i in range(1000) if partition_for(f"c{i}".encode(), partitions) == partition
    )


def test_an_order_older_than_its_partitions_stream_time_minus_the_lateness_is_too_late():
    check = TimeCheck(WEEK, NOW, StreamTimes(4, {0: STREAM_TIME}))
    on_0, on_1 = customer_on(0), customer_on(1)

    assert check.refuse(on_0, STREAM_TIME - WEEK) is None  # exactly at the bound: kept
    refused = check.refuse(on_0, STREAM_TIME - WEEK - dt.timedelta(seconds=1))
    assert refused is not None
    reason, detail = refused
    assert reason == Reason.TOO_LATE == "too_late"
    assert detail == "partition 0: stream time 2011-12-09T12:00:00+00:00 - 7 days"
    assert check.refuse(on_1, dt.datetime(2000, 1, 1, tzinfo=dt.UTC)) is None  # no stream time
    assert check.refuse(on_0, STREAM_TIME + WEEK) is None  # later than the stream: fine


def test_an_order_dated_past_the_clock_skew_is_future_event_time():
    check = TimeCheck.create(
        Settings(allowed_lateness=3600, max_clock_skew=60), StreamTimes(4, {0: NOW}), now=NOW
    )
    on_0 = customer_on(0)

    assert check.allowed_lateness == dt.timedelta(hours=1)
    assert check.refuse(on_0, NOW + dt.timedelta(seconds=60)) is None
    refused = check.refuse(on_0, NOW + dt.timedelta(seconds=61))
    assert refused is not None and refused[0] == Reason.FUTURE_EVENT_TIME == "future_event_time"
    assert check.refuse(on_0, NOW - dt.timedelta(minutes=61)) == (
        Reason.TOO_LATE,
        "partition 0: stream time 2012-01-01T00:00:00+00:00 - 1 hour",
    )


def test_in_file_order_an_order_far_older_than_one_sent_before_it_is_too_late():
    found = StreamTimes(4, {})
    check = TimeCheck.create(Settings(), found, now=NOW)  # the defaults: 7 days, 1 day
    on_0, on_1 = customer_on(0), customer_on(1)

    check.advance(on_0, STREAM_TIME)  # sent: the partition's stream time is at least this

    assert check.refuse(on_0, STREAM_TIME - WEEK - dt.timedelta(minutes=1)) is not None
    assert check.refuse(on_1, STREAM_TIME - WEEK - dt.timedelta(minutes=1)) is None
    assert found.latest == {}  # what the broker showed is not changed


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b'{"occurred_at": "2011-12-09T12:00:00Z"}', STREAM_TIME),
        (b'{"occurred_at": "2011-12-09T13:00:00+01:00"}', STREAM_TIME),
        (b'{"occurred_at": "2011-12-09T12:00:00"}', None),  # no zone: not an event time
        (b'{"occurred_at": "yesterday"}', None),
        (b'{"occurred_at": 1323432000}', None),
        (b'{"type": "order.placed"}', None),
        (b'["occurred_at"]', None),
        (b"not json", None),
        (None, None),
    ],
)
def test_only_json_values_with_a_zoned_occurred_at_give_a_stream_time(value, expected):
    assert event_time_of(value) == expected


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(604_800, "7 days"), (86_400, "1 day"), (7_200, "2 hours"), (300, "5 minutes"), (90, "90 s")],
)
def test_durations_read_as_people_say_them(seconds, text):
    assert duration_text(seconds) == text


def write_export(path: Path, *lines: dict[str, str]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(UCI_HEADER)
        for line in lines:
            cells = {**LINE, **line}
            writer.writerow([cells[c] for c in UCI_HEADER])
    return path


def test_orders_the_workers_would_refuse_are_rejected_line_by_line_and_not_sent(
    tmp_path, monkeypatch
):
    on_0 = customer_on(0)
    path = write_export(
        tmp_path / "export.csv",
        {"InvoiceNo": "old", "CustomerID": on_0, "InvoiceDate": "2011-11-01 10:00:00"},
        {"InvoiceNo": "old", "CustomerID": on_0, "InvoiceDate": "2011-11-01 10:00:00"},
        {"InvoiceNo": "recent", "CustomerID": on_0, "InvoiceDate": "2011-12-05 10:00:00"},
        {"InvoiceNo": "future", "CustomerID": on_0, "InvoiceDate": "2030-01-01 10:00:00"},
    )
    found = StreamTimes(4, {p: STREAM_TIME for p in range(4)}, note="read")

    async def broker_says(settings: Settings) -> StreamTimes:
        return found

    monkeypatch.setattr(replay_module, "_stream_times_if_reachable", broker_says)
    with Source(path) as source:
        writer = RejectsWriter(tmp_path / "rejects.csv", source)
        summary = asyncio.run(
            replay(source, ReplayOptions(), Settings(), dry_run=True, rejects=writer)
        )
        writer.close()

    assert summary.orders_built == 3
    assert summary.refused == {Reason.TOO_LATE: 1, Reason.FUTURE_EVENT_TIME: 1}
    assert summary.rejected == {Reason.TOO_LATE: 2, Reason.FUTURE_EVENT_TIME: 1}
    assert summary.first_lines[Reason.TOO_LATE] == [2, 3]
    with open(tmp_path / "rejects.csv", newline="") as f:
        rejected = list(csv.DictReader(f))
    assert [(r["reject_line"], r["reject_reason"], r["InvoiceNo"]) for r in rejected] == [
        ("2", "too_late", "old"),
        ("3", "too_late", "old"),
        ("5", "future_event_time", "future"),
    ]
    assert rejected[0]["CustomerID"] == on_0  # the original columns, to fix and replay
    data = summary.as_dict()
    assert data["orders_refused_by_reason"] == {"future_event_time": 1, "too_late": 1}
    assert data["stream_times"]["0"] == "2011-12-09T12:00:00+00:00"
    assert "orders refused" in summary.render()

    notices = refusal_notices(summary, TimeCheck.create(Settings(), found), rejects=True)
    assert notices[0] == (
        "1 order is older than what the workers can still recognise (partition stream time - "
        "CRM_ALLOWED_LATENESS = 7 days): would not be sent (too_late), see --rejects"
    )
    assert notices[1].startswith("1 order is dated after the wall clock + CRM_MAX_CLOCK_SKEW")


def test_a_dry_run_without_a_broker_says_the_check_was_skipped(capsys):
    port = free_port()  # closed again: nothing listens there
    settings = Settings(kafka_broker=f"kafka://127.0.0.1:{port}")

    with Source(SLICE) as source, Progress(source.size, dry_run=True) as progress:
        summary = asyncio.run(
            replay(source, ReplayOptions(), settings, dry_run=True, progress=progress)
        )

    assert summary.broker_error is None
    assert summary.stream.note.startswith("skipped: no broker reachable")
    assert summary.orders_built == 401 and summary.refused == {}
    assert "the too_late check is skipped: no broker reachable" in capsys.readouterr().err


def test_an_export_ordered_by_customer_sent_as_it_is_would_be_refused(tmp_path):
    # customers' whole histories one after the other: in file order, each customer's
    # early orders come after later orders of customers on the same partition
    with open(SLICE, newline="") as f:
        rows = list(csv.DictReader(f))
    rows.sort(key=lambda r: r["CustomerID"])  # stable: an order's lines stay together
    path = tmp_path / "by_customer.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=UCI_HEADER)
        writer.writeheader()
        writer.writerows(rows)

    with Source(path) as source:
        as_is = asyncio.run(replay(source, ReplayOptions(), None, assume_sorted=True))
    with Source(path) as source:
        in_order = asyncio.run(replay(source, ReplayOptions(), None))

    assert as_is.refused[Reason.TOO_LATE] > 100
    assert in_order.refused == {}
    assert in_order.orders_built == as_is.orders_built == 401
