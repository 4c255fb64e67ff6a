"""Restart benchmark: how long a worker with a full customers table takes to be ready again.

    python -m bench.restart [--customers 50000] [--events-per-customer 2]
                            [--store memory://|rocksdb://] [--restarts 1]
                            [--stop term|kill] [--membership stack|static|dynamic]
                            [--partitions 4] [--workdir DIR] [--json FILE]

1. Starts the embedded Tansu broker and Redis (:func:`streams.tools.runner.start_stack`
   with no workers) and creates the topics, as :mod:`bench.throughput` does.
2. Fills the input topics: every customer's profile record
   (:meth:`Simulator.introduce`, so the table ends with exactly ``--customers``
   customers), then ``--events-per-customer`` x customers more simulator records of
   ``--mix``.
3. One worker (``--store``) drains them all (its ``/metrics`` page polled until
   every record is counted), and is stopped: cleanly (SIGTERM: offsets committed),
   or with ``--stop kill`` as a crash (SIGKILL, after 3 s idle, so its commits and
   writes are done and the restart reads nothing again). The table's changelogs
   now hold one record per state write.
4. The same worker (same app id, data directory, web port; the membership the stack
   gives a lone worker: dynamic at its 3 s session timeout, a static name with a
   longer ``CRM_SESSION_TIMEOUT``; ``--membership static|dynamic`` chooses one) is
   started again, and right after the start one more simulator record
   (the *probe*) is sent. Its ``/metrics`` and ``/readyz`` are polled every
   0.1 s until the probe is counted as processed. **Ready** = the probe processed:
   partitions assigned, tables recovered, the input read from the committed
   offsets, a new record folded. Measured from the process start: first metrics
   page, ``/readyz`` 200, probe processed; the recovery gauges at every poll
   (did they move?); the changelog records restored
   (``crm_table_recovery_restored_records_total``, else -- before that metric --
   the changelog records on the broker) and the rate over the recovery window
   (faust's "Restoring state" to "Worker ready" log lines, or when the log lacks
   them, process start to ``/readyz`` 200); peak RSS.
   ``--restarts N`` repeats step 4 (stop, start, probe) N times.

Not a test: nothing is asserted about speed. Progress goes to stderr, the report
to stdout, JSON to ``--json FILE``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench import pyspy
from bench.throughput import (
    PROCESSED,
    BenchError,
    _run_async,
    cpu_seconds,
    load_average,
    machine_facts,
    memory_probe_row,
    proc_memory,
    run_reported,
)
from schemas import codec
from streams.settings import Env, Settings
from streams.tools.embedded import Child, free_port
from streams.tools.runner import (
    Running,
    StackOptions,
    handle_sigterm,
    say,
    start_stack,
    static_member_name,
    worker_env,
)
from streams.tools.simulator import MIXES, SimRecord, Simulator, produce

POLL_INTERVAL = 0.1
#: Seconds a worker stays idle before ``--stop kill`` kills it (over the 1 s commit interval).
IDLE_BEFORE_KILL = 3.0
#: faust's recovery log lines (INFO): the window the restore rate is measured over, from
#: the first fetch of the changelogs to the end of the tables' recovery callbacks (the
#: memory store's values are decoded there).
RECOVERY_START = "Restoring state from changelog topics"
RECOVERY_END = "]: Worker ready"
LOG_TIME = re.compile(r"^\[?(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d[,.]\d{3})")
GAUGES = (
    "crm_table_recovery_in_progress",
    "crm_table_recovery_remaining_records",
    "crm_table_recovery_restored_records_total",
    "crm_worker_ready",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.restart",
        description="Restart time of one worker with a full customers table: fill the table, "
        "stop the worker cleanly, start it again and time it until a new record is processed.",
    )
    p.add_argument(
        "--customers", type=int, default=50_000, help="customers in the table (default: 50000)"
    )
    p.add_argument(
        "--events-per-customer",
        type=float,
        default=2.0,
        help="simulator records per customer after their profiles (default: 2)",
    )
    p.add_argument("--partitions", type=int, default=4, help="partitions per topic (default: 4)")
    p.add_argument("--seed", type=int, default=7, help="simulator seed (default: 7)")
    p.add_argument(
        "--mix",
        choices=sorted(MIXES),
        default="storefront",
        help="the simulator mix after the profiles (default: storefront)",
    )
    p.add_argument(
        "--store",
        default="memory://",
        help="the worker's CRM_STORE: memory:// (default) or rocksdb://",
    )
    p.add_argument(
        "--restarts", type=int, default=1, help="restarts measured one after the other (default: 1)"
    )
    p.add_argument(
        "--stop",
        choices=("term", "kill"),
        default="term",
        help="how the worker stops before each restart: term, cleanly (SIGTERM: held states "
        "written, offsets committed; the default), or kill (SIGKILL, a crash, once it has "
        f"been idle {IDLE_BEFORE_KILL:.0f} s: its last commit and writes are done)",
    )
    p.add_argument(
        "--membership",
        choices=("stack", "static", "dynamic"),
        default="stack",
        help="the worker's consumer-group membership: stack (as the stack gives a lone "
        "worker: dynamic at its 3 s session timeout, static with a CRM_SESSION_TIMEOUT over "
        "3 s; the default), static (a CRM_GROUP_INSTANCE_ID) or dynamic (none)",
    )
    p.add_argument(
        "--log-level",
        default="info",
        help="the restarted worker's CRM_LOG_LEVEL (default: info; the recovery window is "
        "read from faust's info lines)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds the fill or a restart may take (default: 600)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="sample the restarted worker with py-spy while it recovers (pip install py-spy); "
        "the collapsed stacks stay in WORKDIR/restart-pyspy-N.txt",
    )
    p.add_argument("--workdir", type=Path, help="logs and worker data (default: a temp dir)")
    p.add_argument("--json", type=Path, dest="json_out", help="write the JSON results here")
    p.add_argument("--keep-workdir", action="store_true", help="keep a temp workdir after success")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.customers < 1 or args.partitions < 1 or args.restarts < 1:
        say("bench: --customers, --partitions and --restarts must be positive")
        return 2
    if args.events_per_customer < 0:
        say("bench: --events-per-customer must not be negative")
        return 2
    if args.profile and pyspy.py_spy_binary() is None:
        say("bench: --profile needs py-spy: .venv/bin/pip install py-spy")
        return 2
    temp = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="crmstream-restart-")) if temp else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    result = run_reported(run, args, workdir)
    if isinstance(result, int):
        return result
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_bytes(codec.dumps_sorted(result))
        say(f"bench: results written to {args.json_out}")
    print(render(result))
    if temp and not (args.keep_workdir or args.profile):
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        say(f"bench: workdir kept: {workdir}")
    return 0


# -- the run ------------------------------------------------------------------------


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    handle_sigterm()  # a killed bench stops its broker, Redis and workers too
    running = start_stack(StackOptions(workers=0, partitions=args.partitions, workdir=workdir))
    try:
        settings = running.settings
        simulator = Simulator(
            seed=args.seed,
            customers=args.customers,
            malformed_rate=0.0,
            retry_rate=0.0,
            **MIXES[args.mix],
        )
        extra = round(args.customers * args.events_per_customer)
        records = itertools.chain(simulator.introduce(), itertools.islice(simulator, extra))
        total = args.customers + extra
        say(f"bench: filling the inputs: {total:,} records for {args.customers:,} customers ...")
        fill_s = _run_async(_send(settings, records, total))
        port = free_port()
        env = worker_env(settings, port, workdir / "worker-restart", "restart")
        if args.membership == "dynamic":
            env.pop(Env.GROUP_INSTANCE_ID, None)
        elif args.membership == "static":
            env[Env.GROUP_INSTANCE_ID] = static_member_name(settings, "restart")
        membership = "static" if env.get(Env.GROUP_INSTANCE_ID) else "dynamic"
        env |= {
            "CRM_STORE": args.store,
            # The simulator's timeline (from 2026-01-01): timers fire on event time.
            "CRM_CLOCK": "replay",
            "CRM_CLOCK_LATENESS": "3600",
        }
        fill = _fill(
            running, env | {"CRM_LOG_LEVEL": "warning"}, port, total, args.timeout, args.stop
        )
        restarts = []
        for i in range(args.restarts):
            restarts.append(
                _restart(running, env | {"CRM_LOG_LEVEL": args.log_level}, port, simulator, i, args)
            )
    finally:
        say("bench: stopping worker, Redis and broker ...")
        running.stack.close()
    first = restarts[0]
    load_at_end = load_average()  # before the machine facts' memory probe loads a CPU
    return {
        "benchmark": "restart",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "parameters": {
            "customers": args.customers,
            "events_per_customer": args.events_per_customer,
            "records": total,
            "partitions": args.partitions,
            "seed": args.seed,
            "mix": args.mix,
            "store": args.store,
            "restarts": args.restarts,
            "stop": args.stop,
            "membership": membership,
            "session_timeout_s": settings.session_timeout,
            "poll_interval_s": POLL_INTERVAL,
        },
        "fill": {"send_s": round(fill_s, 2), **fill},
        # The headline: the first restart.
        "ready_s": first["ready_s"],
        "restored_records": first["restored_records"],
        "restore_records_per_s": first["restore_records_per_s"],
        "gauges_moved": first["gauges_moved"],
        "rss_mib": first["memory_mib"]["peak_rss"],
        "load_average": load_at_end,
        "restart_runs": restarts,
    }


async def _send(settings: Settings, records: Iterator[SimRecord], total: int) -> float:
    started = time.perf_counter()
    step = max(total // 10, 1)
    sent = 0

    def on_sent(record: SimRecord) -> None:
        nonlocal sent
        sent += 1
        if sent % step == 0:
            say(f"bench: sent {sent:>9,} / {total:,}")

    if await produce(settings, records, rate=0, limit=total, on_sent=on_sent) != total:
        raise BenchError(f"sent {sent} records, wanted {total}")
    return time.perf_counter() - started


def _fill(
    running: Running, env: dict[str, str], port: int, total: int, timeout: float, how: str
) -> dict[str, Any]:
    """One worker drains every record, then stops (:func:`_stop`)."""
    say(f"bench: fill: one worker ({env['CRM_STORE']}) drains {total:,} records ...")
    spawned = time.perf_counter()
    child = running.stack.start_worker("worker-restart", env)
    url = f"http://127.0.0.1:{port}"
    next_report = spawned + 10.0
    try:
        while True:
            _alive(child)
            page = _scrape(url)
            done = page.get("processed", 0.0) if page else 0.0
            now = time.perf_counter()
            if done >= total:
                break
            if now - spawned > timeout:
                raise BenchError(f"fill: {done:,.0f} / {total:,} records in {timeout:.0f} s", child)
            if now >= next_report:
                say(f"bench: fill {done:>9,.0f} / {total:,}")
                next_report = now + 10.0
            time.sleep(0.5)
        drained = time.perf_counter() - spawned
        memory = proc_memory(child.proc.pid)
        writes = page.get("crm_state_writes_total", 0.0) if page else 0.0
    finally:
        stopping = time.perf_counter()
        code = _stop(child, how)
    stop_s = time.perf_counter() - stopping
    say(f"bench: fill done in {drained:.1f} s; worker stopped (exit {code}) in {stop_s:.1f} s")
    return {
        "drain_s": round(drained, 2),
        "state_writes": int(writes),
        "stop_s": round(stop_s, 2),
        "exit_code": code,
        "memory_mib": memory,
    }


def _stop(child: Child, how: str) -> int | None:
    """Stop the worker: ``term`` cleanly, ``kill`` as a crash once it has been idle
    :data:`IDLE_BEFORE_KILL` s (so what it read is committed and written, and the
    restart measures the group and the recovery, not records read again)."""
    if how == "kill" and child.proc.poll() is None:
        time.sleep(IDLE_BEFORE_KILL)
        child.kill()
        return child.proc.returncode
    return child.stop(grace=60.0)


def _restart(
    running: Running,
    env: dict[str, str],
    port: int,
    simulator: Simulator,
    index: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    settings = running.settings
    changelog = _run_async(_changelog_records(settings, env.get("CRM_APP_ID", settings.app_id)))
    say(
        f"bench: restart {index + 1}: the changelogs hold {sum(changelog.values()):,} records; "
        "starting the worker again ..."
    )
    log_path = running.stack.workdir / "worker-restart.log"
    log_from = log_path.stat().st_size if log_path.exists() else 0
    load = load_average()
    spawned = time.perf_counter()
    spawned_wall = time.time()
    child = running.stack.start_worker("worker-restart", env)
    # The probe: the simulator's next record, sent as the worker starts.
    _run_async(_send(settings, itertools.islice(simulator, 1), 1))
    probe_sent = time.perf_counter() - spawned
    url = f"http://127.0.0.1:{port}"
    broker_pid = running.stack.broker.proc.pid
    first_page = ready = None
    samples: list[dict[str, Any]] = []
    sampler: pyspy.Sampler | None = None
    profile_out = running.stack.workdir / f"restart-pyspy-{index + 1}.txt"
    profiled: list[float] = []
    next_report = spawned + 5.0
    try:
        while True:
            _alive(child)
            now = time.perf_counter()
            page = _scrape(url)
            at = round(time.perf_counter() - spawned, 2)
            if page is not None:
                if first_page is None:
                    first_page = at
                if ready is None and _ready(url):
                    ready = at
                samples.append(
                    {
                        "t": at,
                        **{k: page.get(k) for k in GAUGES},
                        "worker_cpu_s": round(cpu_seconds(child.proc.pid), 2),
                        "broker_cpu_s": round(cpu_seconds(broker_pid), 2),
                    }
                )
                recovering = bool(page.get("crm_table_recovery_in_progress"))
                if args.profile and sampler is None and recovering and not profiled:
                    sampler = pyspy.Sampler.attach(child.proc.pid, profile_out)
                    profiled.append(time.perf_counter())
                elif sampler is not None and not recovering:
                    sampler.stop()
                    sampler = None
                    profiled.append(time.perf_counter())
                if page.get("processed", 0.0) >= 1:
                    break
            if now - spawned > args.timeout:
                raise BenchError(f"restart: the probe not processed in {args.timeout:.0f} s", child)
            if now >= next_report:
                last = samples[-1] if samples else {}
                say(
                    f"bench: restart {index + 1}: {now - spawned:.0f} s, "
                    f"metrics {'up' if first_page is not None else 'not up'}, "
                    f"recovering {last.get('crm_table_recovery_in_progress')}, "
                    f"remaining {last.get('crm_table_recovery_remaining_records')}, "
                    f"restored {last.get('crm_table_recovery_restored_records_total')}"
                )
                next_report = now + 5.0
            time.sleep(POLL_INTERVAL)
        probe_at = samples[-1]["t"]
        memory = proc_memory(child.proc.pid)
    finally:
        if sampler is not None:
            sampler.stop()
            profiled.append(time.perf_counter())
        code = _stop(child, args.stop)
    profile = None
    if len(profiled) == 2 and profile_out.exists() and profile_out.stat().st_size:
        profile = pyspy.summarize(profile_out, profiled[1] - profiled[0], 100)
        profile["raw_file"] = str(profile_out)
        say(pyspy.render(profile))
    window = _recovery_window(log_path, log_from, spawned_wall)
    restored_metric = max(
        (s["crm_table_recovery_restored_records_total"] or 0 for s in samples), default=0
    )
    has_metric = any(s["crm_table_recovery_restored_records_total"] is not None for s in samples)
    restored = int(restored_metric) if has_metric else sum(changelog.values())
    seconds = (window[1] - window[0]) if window else (ready or probe_at)
    rate = restored / seconds if seconds and seconds > 0 else None
    cpu = _recovery_cpu(samples)
    moved = any(
        (s["crm_table_recovery_in_progress"] or 0) > 0
        or (s["crm_table_recovery_remaining_records"] or 0) > 0
        or ((s["crm_table_recovery_restored_records_total"] or 0) > 0 and not s["crm_worker_ready"])
        for s in samples
    )
    say(
        f"bench: restart {index + 1}: ready (probe processed) after {probe_at:.1f} s; "
        f"{restored:,} changelog records restored"
        + (f" at {rate:,.0f}/s" if rate else "")
        + f"; recovery gauges {'moved' if moved else 'stayed at 0'}; exit {code}"
    )
    return {
        "load_average": load,
        "changelog_records": changelog,
        "restored_records": restored,
        "restored_from": "metric" if has_metric else "changelog end offsets",
        "recovery_window_s": ([round(window[0], 2), round(window[1], 2)] if window else None),
        "restore_records_per_s": round(rate, 1) if rate else None,
        "first_metrics_s": first_page,
        "readyz_s": ready,
        "probe_sent_s": round(probe_sent, 2),
        "ready_s": probe_at,
        "gauges_moved": moved,
        # CPU shares (1.0 = one core) over the samples that read recovery in progress.
        "recovery_cpu": cpu,
        "memory_mib": memory,
        "exit_code": code,
        "samples": _thin(samples),
        "profile": profile,
    }


def _recovery_cpu(samples: list[dict[str, Any]]) -> dict[str, float] | None:
    """CPU of the worker and the broker from the last sample before recovery showed to
    the first one after it ended (1.0 = one core), and the worker's CPU per restored
    record: on a machine others load too, that moves less than records/s."""
    start = next((i for i, s in enumerate(samples) if s["crm_table_recovery_in_progress"]), None)
    if start is None:
        return None
    end = next(
        (i for i in range(start, len(samples)) if not samples[i]["crm_table_recovery_in_progress"]),
        None,
    )
    if end is None:
        return None
    a, b = samples[max(start - 1, 0)], samples[end]
    span = b["t"] - a["t"]
    worker = b["worker_cpu_s"] - a["worker_cpu_s"]
    restored = (b["crm_table_recovery_restored_records_total"] or 0) - (
        a["crm_table_recovery_restored_records_total"] or 0
    )
    return {
        "seconds": round(span, 2),
        "worker_cpu_s": round(worker, 2),
        "worker_share": round(worker / span, 2) if span > 0 else 0.0,
        "broker_share": (
            round((b["broker_cpu_s"] - a["broker_cpu_s"]) / span, 2) if span > 0 else 0.0
        ),
        "worker_cpu_us_per_record": round(1e6 * worker / restored, 1) if restored else None,
    }


async def _changelog_records(settings: Settings, app_id: str) -> dict[str, int]:
    """Records on each changelog topic of ``app_id`` (sum of end offsets: every changelog
    batch ends in a one-record seal batch, so Tansu's end offsets are exact)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.broker_bootstrap, **settings.kafka_client_options()
    )
    await consumer.start()
    try:
        topics = sorted(
            t
            for t in await consumer.topics()
            if t.startswith(f"{app_id}-") and t.endswith("-changelog")
        )
        tps = [
            TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t))
        ]
        ends = await consumer.end_offsets(tps) if tps else {}
        out: dict[str, int] = {}
        for tp, end in ends.items():
            out[tp.topic] = out.get(tp.topic, 0) + end
        return out
    finally:
        await consumer.stop()


def _recovery_window(log_path: Path, start: int, spawned_wall: float) -> tuple[float, float] | None:
    """Seconds after the start of faust's first "Restoring state" and last "Worker ready"
    line in this run's part of the worker log, or None."""
    try:
        with open(log_path, "rb") as log:
            log.seek(start)
            lines = log.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    begin = end = None
    for line in lines:
        if RECOVERY_START not in line and RECOVERY_END not in line:
            continue
        match = LOG_TIME.match(line.strip())
        if match is None:
            continue
        stamp = match.group(1).replace("T", " ").replace(".", ",")
        at = time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")) + int(stamp[20:]) / 1000
        if RECOVERY_START in line and begin is None:
            begin = at - spawned_wall
        elif RECOVERY_END in line:
            end = at - spawned_wall
    return (begin, end) if begin is not None and end is not None else None


def _alive(child: Child) -> None:
    if child.proc.poll() is not None:
        raise BenchError(f"worker exited with code {child.proc.returncode}", child)


def _scrape(url: str) -> dict[str, float] | None:
    """Totals of the metrics page's samples by name, plus ``processed``; None: no page."""
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
            text = response.read().decode()
    except (OSError, urllib.error.URLError):
        return None
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    totals["processed"] = sum(totals.get(name, 0.0) for name in PROCESSED)
    return totals


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _thin(samples: list[dict[str, Any]], keep: int = 200) -> list[dict[str, Any]]:
    """At most ``keep`` samples, evenly spread, the last one always kept."""
    if len(samples) <= keep:
        return samples
    step = len(samples) / keep
    return [samples[int(i * step)] for i in range(keep - 1)] + [samples[-1]]


# -- output -------------------------------------------------------------------------


def render(r: dict[str, Any]) -> str:
    p, fill = r["parameters"], r["fill"]
    head = (
        f"crmstream restart: {p['customers']:,} customers, {p['records']:,} records, "
        f"{p['partitions']} partitions, store {p['store']}, "
        f"{p.get('membership', 'static')} membership"
        + (f" ({p['session_timeout_s']:g} s session)" if "session_timeout_s" in p else "")
        + f", stop by {p.get('stop', 'term')}, "
        f"{r['machine']['nproc']} CPUs, Python {r['machine']['python']}"
    )
    rows = [
        (
            "fill: drain / stop",
            f"{fill['drain_s']} s / {fill['stop_s']} s "
            f"({fill['state_writes']:,} state writes; "
            f"peak RSS {fill['memory_mib']['peak_rss']} MiB)",
        ),
    ]
    for i, run in enumerate(r["restart_runs"], 1):
        rate = run["restore_records_per_s"]
        window = run["recovery_window_s"]
        rows += [
            (f"restart {i}: load average", " ".join(map(str, run["load_average"]))),
            (f"restart {i}: changelog records", f"{sum(run['changelog_records'].values()):,}"),
            (
                f"restart {i}: restored",
                f"{run['restored_records']:,} (from the {run['restored_from']})"
                + (f", {rate:,.0f} records/s" if rate else ""),
            ),
            (
                f"restart {i}: recovery window",
                f"{window[0]} s .. {window[1]} s" if window else "not in the log",
            ),
            (
                f"restart {i}: CPU while recovering",
                (
                    f"worker {run['recovery_cpu']['worker_share']:.0%}, broker "
                    f"{run['recovery_cpu']['broker_share']:.0%} of a core; worker "
                    f"{run['recovery_cpu']['worker_cpu_us_per_record']} µs CPU per record"
                    if run.get("recovery_cpu")
                    else "n/a (the gauges did not show recovery for two samples)"
                ),
            ),
            (f"restart {i}: first /metrics", f"{run['first_metrics_s']} s"),
            (f"restart {i}: /readyz 200", f"{run['readyz_s']} s"),
            (f"restart {i}: READY (probe processed)", f"{run['ready_s']} s"),
            (f"restart {i}: recovery gauges moved", "yes" if run["gauges_moved"] else "no"),
            (f"restart {i}: peak RSS", f"{run['memory_mib']['peak_rss']} MiB"),
        ]
    rows.append(("load average at the end", " ".join(map(str, r["load_average"]))))
    probe = memory_probe_row(r.get("machine"))
    if probe:
        rows.append(probe)
    width = max(len(k) for k, _ in rows)
    return "\n".join([head, "-" * len(head), *(f"{k:<{width}}  {v}" for k, v in rows)])


if __name__ == "__main__":
    sys.exit(main())
