"""``crmstream replay``: export rows -> order events or rejections, with no broker.

Rows are written as the UCI export writes them (CSV text, the UCI header) and
read back through the same reader the command uses; each test gives only the
cells its behaviour is about.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import socket
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from schemas.registry import VALIDATORS
from streams import codec
from streams.errors import ConfigError
from streams.replay import (
    REASON_TEXT,
    UCI_MAP,
    UCI_MAP_SPEC,
    Reason,
    Rejection,
    RejectsWriter,
    ReplayEvent,
    ReplayOptions,
    Source,
    SourceRow,
    Summary,
    build_events,
    check_columns,
    csv_rows,
    format_of,
    normalise_customer_id,
    parse_map,
    replay,
)
from streams.settings import Settings

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

    for event in events_of(outcomes(rows)):
        VALIDATORS["orders"].validate_python(codec.loads(event.value))


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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    settings = Settings(kafka_broker=f"kafka://127.0.0.1:{port}")

    with Source(SLICE) as source:
        summary = asyncio.run(replay(source, ReplayOptions(), settings, connect_timeout=0.5))

    assert summary.broker_error is not None
    assert "cannot reach the Kafka broker" in summary.broker_error
    assert summary.events_sent == {}
    assert summary.rows_read == 0  # nothing read before the broker answered
