"""``crmstream replay`` run as a user runs it: a subprocess on the UCI slice.

The counts the command must report are computed here from the file with
nothing but the csv module. Two tests send to a real embedded broker (Tansu)
and read the orders topic back: one event per order, in event-time order per
partition, and on a second run only what the workers can still recognise.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import subprocess
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from schemas import codec
from streams.settings import Settings
from streams.tools.embedded import Stack
from tests import cli

pytestmark = pytest.mark.e2e

SLICE = Path(__file__).resolve().parents[1] / "data" / "online_retail_slice.csv"
NO_BROKER = {"KAFKA_BROKER": "kafka://127.0.0.1:9"}  # nothing listens there


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return cli.run(*args, env=env, timeout=timeout)


def slice_counts() -> dict[str, Any]:
    """Rows, rejects by reason and orders by type, from the file itself."""
    with open(SLICE, newline="") as f:
        rows = list(csv.DictReader(f))
    adjustment = [r for r in rows if int(r["Quantity"]) < 0 and not r["InvoiceNo"].startswith("C")]
    guest = [r for r in rows if not r["CustomerID"] and r not in adjustment]
    invoices = {
        (r["InvoiceNo"], r["CustomerID"].removesuffix(".0")) for r in rows if r["CustomerID"]
    }
    returned = {inv for inv, _ in invoices if inv.startswith("C")}
    return {
        "rows": len(rows),
        "rejected": {"missing_customer_id": len(guest), "stock_adjustment": len(adjustment)},
        "orders": {"order.placed": len(invoices) - len(returned), "order.returned": len(returned)},
        "customer_of": dict(invoices),
    }


def test_help_lists_replay():
    result = run("--help")

    assert result.returncode == 0
    assert "replay" in result.stdout


def test_dry_run_json_summary_counts_rows_orders_and_rejects(tmp_path):
    expected = slice_counts()
    rejects = tmp_path / "rejects.csv"

    result = run(
        "replay", str(SLICE), "--dry-run", "--json", "--rejects", str(rejects), env=NO_BROKER
    )

    assert result.returncode == 0, result.stderr
    summary = codec.loads(result.stdout)
    assert summary["dry_run"] is True
    assert summary["sorted"] is True
    assert summary["stream_time_check"].startswith("skipped: no broker reachable")
    assert "the too_late check is skipped" in result.stderr
    assert summary["rows_read"] == expected["rows"]
    assert summary["orders_by_type"] == expected["orders"]
    assert summary["orders_built"] == sum(expected["orders"].values())
    assert summary["events_sent"] == 0
    assert {code: r["rows"] for code, r in summary["rejected_by_reason"].items()} == expected[
        "rejected"
    ]
    assert summary["rows_rejected"] == sum(expected["rejected"].values())
    for reason in summary["rejected_by_reason"].values():
        assert len(reason["first_lines"]) == min(3, reason["rows"])
    with open(rejects, newline="") as f:
        rejected = list(csv.DictReader(f))
    assert len(rejected) == summary["rows_rejected"]
    assert {r["reject_reason"] for r in rejected} == set(expected["rejected"])


def test_plain_summary_is_readable():
    result = run("replay", str(SLICE), "--dry-run", env=NO_BROKER)

    assert result.returncode == 0, result.stderr
    assert "dry run: nothing sent" in result.stdout
    assert "missing_customer_id" in result.stdout
    assert "rows read" in result.stdout


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--map", "customer=CustomerID,order_id=InvoiceNo,occurred_at=InvoiceDate"], "customer"),
        (
            [
                "--map",
                "customer_id=Client,order_id=InvoiceNo,occurred_at=InvoiceDate,price=UnitPrice",
            ],
            "Client",
        ),
        (["--timezone", "Nowhere/Atlantis"], "--timezone"),
    ],
)
def test_bad_options_exit_2_naming_the_key_and_send_nothing(args, named):
    # no broker is listening here: exiting 2 at once proves nothing was tried
    result = run(
        "replay", str(SLICE), *args, env={"KAFKA_BROKER": "kafka://127.0.0.1:9"}, timeout=20
    )

    assert result.returncode == 2
    assert named in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_replay_sends_one_event_per_order_keyed_by_customer(tmp_path):
    expected = slice_counts()
    n = sum(expected["orders"].values())
    with Stack(tmp_path / "stack") as stack:
        stack.start_broker()
        env = {"KAFKA_BROKER": stack.broker_url}

        result = run("replay", str(SLICE), "--json", env=env)
        first = read_topic(stack.broker_url, Settings().topics.orders)
        rejects = tmp_path / "rejects.csv"
        again = run("replay", str(SLICE), "--json", "--rejects", str(rejects), env=env)
        records = read_topic(stack.broker_url, Settings().topics.orders)

    assert result.returncode == 0, result.stderr
    summary = codec.loads(result.stdout)
    assert summary["events_sent_by_type"] == expected["orders"]  # a fresh broker: all of it
    assert summary["stream_time_check"].startswith("the input topics are empty")
    ids = Counter(value["event_id"] for _, _, value in first)
    assert len(ids) == n and set(ids.values()) == {1}  # one event per order
    for _, key, value in first:
        assert key == value["customer_id"] == expected["customer_of"][value["order_id"]]
        assert value["event_id"] == f"replay:{value['type']}:{value['order_id']}"

    # The second run reads each partition's stream time (the latest order of the first
    # run there) and sends only orders within CRM_ALLOWED_LATENESS (7 days) of it: the
    # ones the workers still recognise as repeats. The rest would be refused: not sent.
    latest: dict[int, dt.datetime] = {}
    for partition, _, value in first:
        moment = dt.datetime.fromisoformat(value["occurred_at"])
        latest[partition] = max(latest.get(partition, moment), moment)
    too_late = {
        value["event_id"]
        for partition, _, value in first
        if dt.datetime.fromisoformat(value["occurred_at"])
        < latest[partition] - dt.timedelta(days=7)
    }
    assert again.returncode == 0, again.stderr
    second = codec.loads(again.stdout)
    assert second["orders_refused_by_reason"] == {"too_late": len(too_late)}
    assert second["events_sent"] == n - len(too_late) > 0
    assert f"{len(too_late)} orders are older than what the workers can still" in again.stderr
    with open(rejects, newline="") as f:
        rejected = [r for r in csv.DictReader(f) if r["reject_reason"] == "too_late"]
    assert {
        f"replay:order.{'returned' if r['InvoiceNo'].startswith('C') else 'placed'}:"
        f"{r['InvoiceNo']}"
        for r in rejected
    } == too_late
    resent = Counter(value["event_id"] for _, _, value in records) - ids
    assert set(resent) == set(ids) - too_late and set(resent.values()) == {1}


def test_an_export_ordered_by_customer_is_sent_in_event_time_order(tmp_path):
    with open(SLICE, newline="") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames, list(reader)
    rows.sort(key=lambda r: r["CustomerID"])  # each customer's history in one piece
    export = tmp_path / "by_customer.csv"
    with open(export, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header or [])
        writer.writeheader()
        writer.writerows(rows)

    with Stack(tmp_path / "stack") as stack:
        stack.start_broker()
        env = {"KAFKA_BROKER": stack.broker_url}
        result = run("replay", str(export), "--json", env=env)
        records = read_topic(stack.broker_url, Settings().topics.orders)

    assert result.returncode == 0, result.stderr
    summary = codec.loads(result.stdout)
    assert summary["sorted"] is True and summary["orders_refused"] == 0
    assert summary["events_sent"] == len(records) == sum(slice_counts()["orders"].values())
    assert "sending 401 events in event-time order" in result.stderr
    by_partition: defaultdict[int, list[dt.datetime]] = defaultdict(list)
    for partition, _, value in records:
        by_partition[partition].append(dt.datetime.fromisoformat(value["occurred_at"]))
    assert len(by_partition) > 1
    for times in by_partition.values():
        assert times == sorted(times)  # non-decreasing event time on every partition
    in_file = [r["InvoiceDate"] for r in rows if r["CustomerID"]]
    assert in_file != sorted(in_file)  # the export itself was not in time order


def read_topic(broker_url: str, topic: str) -> list[tuple[int, str, dict[str, Any]]]:
    """Every record of ``topic`` as (partition, key, value), each partition in offset
    order; done after 3 s without a record."""

    async def go() -> list[tuple[int, str, dict[str, Any]]]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=broker_url.split("://", 1)[1],
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        out: list[tuple[int, str, dict[str, Any]]] = []
        try:
            idle = 0
            while idle < 3:
                batch = await consumer.getmany(timeout_ms=1000)
                idle = 0 if batch else idle + 1
                for tp, part in batch.items():
                    out.extend((tp.partition, r.key.decode(), codec.loads(r.value)) for r in part)
        finally:
            await consumer.stop()
        return out

    return asyncio.run(go())
