"""The ``crmstream`` command line."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.errors import CrmStreamError

if TYPE_CHECKING:
    from streams.settings import Settings
    from streams.tools.runner import StackOptions

Handler = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return handler(args)
    except CrmStreamError as exc:
        print(f"crmstream: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crmstream",
        description="Real-time customer care and retention on e-commerce event streams.",
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(name: str, help_text: str, handler: Handler) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler, command=name)
        return p

    demo = command(
        "demo",
        "Run everything on this machine (broker, Redis, workers, simulator) with a live view.",
        _demo,
    )
    demo.epilog = _STACK_EPILOG + (
        " The demo runs the replay clock with 1 h lateness unless --clock, CRM_CLOCK, "
        "--clock-lateness or CRM_CLOCK_LATENESS says otherwise: the simulator keeps its own "
        "compressed timeline, so timers fire on its event time."
    )
    _stack_options(demo)
    demo.add_argument("--seed", type=int, default=7, help="simulator seed (default: 7)")
    demo.add_argument(
        "--customers", type=int, default=300, help="simulated customers (default: 300)"
    )
    demo.add_argument("--rate", type=float, default=200.0, help="events per second (default: 200)")
    demo.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="stop after this many seconds and print a summary (default: run until Ctrl-C)",
    )
    demo.add_argument(
        "--malformed-rate", type=float, default=0.02, help="share of bad records (default: 0.02)"
    )
    demo.add_argument(
        "--no-live", action="store_true", help="plain progress lines instead of the live view"
    )
    demo.add_argument("--summary", type=Path, help="write the final counts as JSON to this file")
    demo.add_argument(
        "--messaging",
        action="store_true",
        help="also run the simulated messaging service (crmstream messaging): delivery and "
        "open outcomes, conversions; then see crmstream report actions (a control group "
        "needs policy.holdout in --rules)",
    )

    up = command(
        "up",
        "Start the embedded broker, Redis and workers (no simulator) and print their addresses.",
        _up,
    )
    up.epilog = _STACK_EPILOG
    _stack_options(up)

    command("worker", "Run one worker against KAFKA_BROKER / REDIS_URL (production).", _worker)

    simulate = command("simulate", "Send simulated customer events to KAFKA_BROKER.", _simulate)
    simulate.add_argument("--seed", type=int, default=7, help="simulator seed (default: 7)")
    simulate.add_argument(
        "--customers", type=int, default=300, help="simulated customers (default: 300)"
    )
    simulate.add_argument(
        "--rate", type=float, default=200.0, help="events per second, 0 = unthrottled"
    )
    simulate.add_argument(
        "--duration", type=float, default=0.0, help="seconds to run (0 = until --limit or Ctrl-C)"
    )
    simulate.add_argument(
        "--limit", type=int, default=0, help="number of events to send (0 = no limit)"
    )
    simulate.add_argument("--malformed-rate", type=float, default=0.01, help="share of bad records")
    simulate.add_argument(
        "--start",
        type=dt.datetime.fromisoformat,
        default=None,
        help="event time of the first event, ISO-8601 (default: 2026-01-01T00:00:00+00:00)",
    )

    replay = command(
        "replay",
        "Backfill a historical order export (CSV or JSON lines, one row per invoice line) "
        "into the orders topic: one order.placed / order.returned event per order, sent in "
        "event-time order; orders the workers would refuse (too_late, future_event_time) are "
        "rejected, not sent.",
        _replay,
    )
    replay.add_argument(
        "file",
        type=Path,
        metavar="FILE",
        help="the export; .gz is decompressed; the lines of one order must be consecutive",
    )
    replay.add_argument(
        "--format",
        choices=("csv", "jsonl"),
        default=None,
        help="input format (default: by suffix, .jsonl/.ndjson/.json[.gz] = jsonl, else csv)",
    )
    replay.add_argument(
        "--map",
        dest="map_spec",
        metavar="TARGET=COLUMN,...",
        default=None,
        help="which column holds each field; replaces the default map. Targets: customer_id, "
        "occurred_at, order_id (required), sku, category, qty, price, amount (the line total, "
        "used instead of qty x price), region, currency. Default (UCI Online Retail): "
        "customer_id=CustomerID,occurred_at=InvoiceDate,order_id=InvoiceNo,sku=StockCode,"
        "qty=Quantity,price=UnitPrice,region=Country. Customer ids a spreadsheet wrote as "
        "floats (17850.0) are read as 17850",
    )
    replay.add_argument(
        "--timezone", default="UTC", help="zone of times without an offset (default: UTC)"
    )
    replay.add_argument(
        "--date-format",
        default=None,
        help="strptime format of the order time, e.g. '%%d/%%m/%%Y %%H:%%M' (default: ISO 8601)",
    )
    replay.add_argument(
        "--currency", default="GBP", help="currency when no column gives one (default: GBP)"
    )
    replay.add_argument(
        "--return-prefix",
        default="C",
        help="order ids of returns start with this; an order with only negative quantities "
        "is a return if it has it, else a stock adjustment and rejected (default: C)",
    )
    replay.add_argument(
        "--assume-sorted",
        action="store_true",
        help="the file is already in event-time order: send in file order as it is read, "
        "without the sort (an order far older than one sent before it on its partition is "
        "rejected as too_late)",
    )
    replay.add_argument(
        "--sort-memory",
        type=int,
        default=None,
        metavar="MB",
        help="memory for the event-time sort: runs of this many MiB of events are sorted, "
        "spilled to a temporary directory ($TMPDIR) and merged (default: 32)",
    )
    replay.add_argument(
        "--dry-run",
        action="store_true",
        help="read, build, validate and sort everything, send nothing, print the same summary; "
        "the too_late check reads the broker's stream times if KAFKA_BROKER answers",
    )
    replay.add_argument(
        "--rejects",
        type=Path,
        metavar="PATH",
        default=None,
        help="write rejected rows here (CSV: line, reason code, detail, original columns)",
    )
    replay.add_argument("--json", action="store_true", help="print the summary as JSON")

    customer = command(
        "customer",
        "Show one customer's profile (stage, RFM, grade, tags, counters, flags, recent "
        "actions) from a running worker; any worker forwards to the owner.",
        _customer,
    )
    customer.add_argument("customer_id", metavar="ID", help="the platform's customer id")
    customer.add_argument(
        "--url",
        default=None,
        help="a worker's web address (default: http://CRM_WEB_HOST:CRM_WEB_PORT, "
        "i.e. http://127.0.0.1:6066)",
    )
    customer.add_argument(
        "--as-of",
        default=None,
        metavar="TIME",
        help="evaluate at this time: ISO 8601 with a zone (2011-12-10T09:00:00Z) or a date "
        "(2011-12-10 = midnight UTC); not before the day of the customer's latest event "
        "(what its state can answer; the error gives the oldest time). Default: the "
        "worker's clock for the customer's partition (replay clock: its watermark; live "
        "clock: now), or the customer's latest event if later; the output says which",
    )
    customer.add_argument(
        "--json", action="store_true", help="print the same JSON document as GET /customers/ID"
    )

    actions = command("actions", "Read the outbound actions topic.", _needs_subcommand)
    actions_sub = actions.add_subparsers(title="actions commands", metavar="COMMAND")
    tail = actions_sub.add_parser(
        "tail", help="Print care and retention actions as they are emitted."
    )
    tail.set_defaults(handler=_actions_tail)
    _tail_options(tail)

    dlq = command("dlq", "Read the dead-letter topic.", _needs_subcommand)
    dlq_sub = dlq.add_subparsers(title="dlq commands", metavar="COMMAND")
    dlq_tail = dlq_sub.add_parser("tail", help="Print dead letters: code, source and reason.")
    dlq_tail.set_defaults(handler=_dlq_tail)
    _tail_options(dlq_tail)

    report = command(
        "report",
        "Reports read from the topics: 'actions' is the uplift of each action type.",
        _needs_subcommand,
    )
    report_sub = report.add_subparsers(title="report commands", metavar="COMMAND")
    report_actions = report_sub.add_parser(
        "actions",
        help="Per action type, treated vs held out: sent, delivered, opened, clicked, "
        "converted, revenue, conversion uplift with a 95 %% interval (docs/outcomes.md).",
    )
    report_actions.set_defaults(handler=_report_actions)
    report_actions.add_argument(
        "--since",
        default=None,
        metavar="TIME",
        help="only actions sent or held out at or after this time: ISO 8601 with a zone "
        "(2026-01-05T09:00:00Z) or a date (2026-01-05 = midnight UTC)",
    )
    report_actions.add_argument("--json", action="store_true", help="print the report as JSON")

    messaging = command(
        "messaging",
        "Run a simulated messaging service: answer crm.actions with delivery, open, click "
        "and unsubscribe outcomes, and place orders with a known true uplift per action type.",
        _messaging,
    )
    messaging.add_argument("--delivery-rate", type=float, default=0.95)
    messaging.add_argument("--open-rate", type=float, default=0.4)
    messaging.add_argument("--click-rate", type=float, default=0.3, help="share of the opened")
    messaging.add_argument("--unsubscribe-rate", type=float, default=0.005)
    messaging.add_argument(
        "--base-conversion",
        type=float,
        default=0.10,
        help="chance a customer buys within --convert-within-hours with no effect of the action",
    )
    messaging.add_argument(
        "--uplift",
        action="append",
        default=[],
        metavar="TYPE=POINTS",
        help="true conversion uplift of sending an action type, e.g. repurchase_reminder=0.05 "
        "(repeatable; others: 0)",
    )
    messaging.add_argument("--convert-within-hours", type=float, default=72.0)
    messaging.add_argument("--seed", type=int, default=0)
    messaging.add_argument(
        "--from-now", action="store_true", help="answer only actions from now on"
    )
    messaging.add_argument(
        "--idle-exit", type=float, default=0.0, help="exit after this many idle seconds"
    )

    _flags_commands(command)
    _clock_commands(command)

    command("topics", "Create every crmstream topic on KAFKA_BROKER (idempotent).", _topics)

    settings = command(
        "settings",
        "The environment variables a worker reads: check this environment, or print the "
        "reference of every variable (docs/settings.md).",
        _needs_subcommand,
    )
    settings_sub = settings.add_subparsers(title="settings commands", metavar="COMMAND")
    settings_sub.add_parser(
        "check",
        help="Read this environment as a worker would: exit 0 and list the variables "
        "changed from their defaults (secrets masked), or exit 2 naming the wrong one.",
    ).set_defaults(handler=_settings_check)
    settings_sub.add_parser(
        "reference", help="Print the settings reference (Markdown: docs/settings.md)."
    ).set_defaults(handler=_settings_reference)

    schemas = command(
        "schemas",
        "Export the JSON Schema files of every contract and of the rules file.",
        _needs_subcommand,
    )
    schemas_sub = schemas.add_subparsers(title="schemas commands", metavar="COMMAND")
    export = schemas_sub.add_parser("export", help="Write (or --check) the JSON Schema files.")
    export.set_defaults(handler=_schemas)
    export.add_argument(
        "--check", action="store_true", help="only check they are current (exit 1 if not)"
    )
    export.add_argument("--out", type=Path, default=None, help="directory (default: schemas/json)")
    return parser


def _flags_commands(command: Callable[[str, str, Handler], argparse.ArgumentParser]) -> None:
    from schemas.flags import FlagKind

    flags = command(
        "flags",
        "Review anomaly flags (crm.flags): list them, clear a false positive or confirm one.",
        _needs_subcommand,
    )
    sub = flags.add_subparsers(title="flags commands", metavar="COMMAND")
    listing = sub.add_parser(
        "list",
        help="Print every flag on crm.flags with its current status.",
        description="Read crm.flags from its beginning to its current end, fold the records "
        "by flag id (the latest status wins) and print one flag per line: status, kind, id, "
        "customer (or subject), when raised and why; reviewed flags add who, when and why.",
    )
    listing.set_defaults(handler=_flags_list)
    listing.add_argument("--open", action="store_true", help="only open (unreviewed) flags")
    listing.add_argument(
        "--kind",
        choices=[k.value for k in FlagKind],
        default=None,
        metavar="KIND",
        help=f"only flags of this kind ({', '.join(k.value for k in FlagKind)})",
    )
    listing.add_argument("--json", action="store_true", help="print a JSON array of the flags")
    _connect_option(listing)
    for name, decision, meaning, effect in (
        (
            "clear",
            "cleared",
            "a false positive",
            "the flag stops holding back marketing and its risk tag is removed; only new "
            "evidence can raise a flag of that kind again",
        ),
        (
            "confirm",
            "confirmed",
            "the flag stands",
            "its risk tag stays and no flag of that kind is raised again while it is confirmed",
        ),
    ):
        review = sub.add_parser(
            name,
            help=f"Mark a flag {decision} ({meaning}).",
            description=f"Mark flag FLAG_ID {decision} ({meaning}): {effect}. A customer flag "
            "gets a customer.flag_reviewed command on crm.customers (keyed by the customer id), "
            "which the worker applies and records on crm.flags; a flag about many customers "
            "(complaint_surge, logistics_delay) gets its review record appended to crm.flags. "
            f"Exit 1 if the flag is unknown, already {decision}, or the broker fails; "
            "2 for a bad --reason or --by.",
        )
        review.set_defaults(handler=_flags_review, decision=decision)
        review.add_argument("flag_id", metavar="FLAG_ID", help="the flag's id (see flags list)")
        review.add_argument(
            "--reason", required=True, help="why (kept in the audit log; no personal data)"
        )
        review.add_argument(
            "--by",
            metavar="OPERATOR",
            default=None,
            help="who reviews it (default: your login name, else 'operator')",
        )
        _connect_option(review)


def _clock_commands(command: Callable[[str, str, Handler], argparse.ArgumentParser]) -> None:
    from streams.settings import INPUT_FAMILIES

    clock = command(
        "clock",
        "The workers' clocks: advance the partitions' stream time, or show it.",
        _needs_subcommand,
    )
    sub = clock.add_subparsers(title="clock commands", metavar="COMMAND")
    tick = sub.add_parser(
        "tick",
        help="Send a clock.tick to every partition of an input topic.",
        description="Send one clock.tick control record (schemas/control.py) to every "
        "partition of an input topic on KAFKA_BROKER (explicit partition, no key, event id "
        "tick:<time>:<partition>) and wait for the broker's acks. Each partition's stream "
        "time moves to TIME (if it was earlier), so on the replay clock the timers due "
        "before TIME (minus CRM_CLOCK_LATENESS) fire, with no customer event needed: e.g. at "
        "the end of a backfill. On the live clock it changes nothing the wall clock has "
        "not. A TIME later than now + CRM_MAX_CLOCK_SKEW is refused here (the workers "
        "would refuse it too). Exit 1 if the broker fails, 2 for a bad TIME.",
    )
    tick.set_defaults(handler=_clock_tick)
    tick.add_argument(
        "--to",
        required=True,
        metavar="TIME",
        help="ISO 8601 with a zone (2011-12-10T09:00:00Z), a date (2011-12-10 = midnight "
        "UTC), or 'now'",
    )
    tick.add_argument(
        "--topic",
        choices=INPUT_FAMILIES,
        default="customers",
        metavar="FAMILY",
        help=f"the input topic, by family ({', '.join(INPUT_FAMILIES)}; default: customers); "
        "its name comes from CRM_TOPIC_<FAMILY> like the workers'",
    )
    _connect_option(tick)
    show = sub.add_parser(
        "show",
        help="Print each partition's clock from running workers (GET /clock).",
        description="Ask workers for their clocks (GET /clock) and print, per partition "
        "each owns: its stream time (the latest event time released), its watermark (what "
        "timers fire up to), how far timers have fired, whether every input is caught up, "
        "and the records waiting in its event-time merge; and the clock's settings. "
        "Exit 1 if a worker does not answer.",
    )
    show.set_defaults(handler=_clock_show)
    show.add_argument(
        "--url",
        action="append",
        default=None,
        help="a worker's web address; repeat for several workers (default: "
        "http://CRM_WEB_HOST:CRM_WEB_PORT, i.e. http://127.0.0.1:6066)",
    )
    show.add_argument("--json", action="store_true", help="print {url: /clock document} as JSON")


_STACK_EPILOG = (
    "The workers get your environment's settings: every CRM_* variable passes through "
    "(see README, Configuration); a flag wins over its variable. The stack sets only what "
    "it must own: KAFKA_BROKER, REDIS_URL, and per worker CRM_WEB_PORT and CRM_DATA_DIR "
    "(and CRM_PARTITIONS when --partitions is given). The KAFKA_* / REDIS_* security "
    "variables are not passed: the stack's loopback broker and Redis take no credentials. "
    "A bad value stops it, naming the variable, before anything starts."
)


def _connect_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="give up if the broker does not answer within this time (default: 30)",
    )


def _stack_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=1, help="number of worker processes (default: 1)")
    p.add_argument(
        "--partitions",
        type=int,
        default=None,
        help="partitions per topic (default: CRM_PARTITIONS, else 4)",
    )
    p.add_argument("--workdir", type=Path, help="where logs and state go (default: a temp dir)")
    p.add_argument(
        "--rules",
        default=None,
        help="rules file (TOML) (default: CRM_RULES_FILE, else domain.md's defaults)",
    )
    p.add_argument(
        "--clock",
        choices=("live", "replay"),
        default=None,
        help="which clock fires timers: live (wall clock) or replay (event time) "
        "(default: CRM_CLOCK, else live for up, replay for demo)",
    )
    p.add_argument(
        "--clock-lateness",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how far timers wait behind each partition's clock (default: "
        "CRM_CLOCK_LATENESS, else 0; the demo's replay clock: 3600)",
    )


def _messaging(args: argparse.Namespace) -> int:
    from streams.settings import Settings
    from streams.tools.messaging import MessagingConfig, run

    uplift: dict[str, float] = {}
    for item in args.uplift:
        kind, _, points = item.partition("=")
        try:
            uplift[kind] = float(points)
        except ValueError:
            print(f"crmstream: --uplift: expected TYPE=POINTS, got {item!r}", file=sys.stderr)
            return 2
    try:
        config = MessagingConfig(
            delivery_rate=args.delivery_rate,
            open_rate=args.open_rate,
            click_rate=args.click_rate,
            unsubscribe_rate=args.unsubscribe_rate,
            base_conversion=args.base_conversion,
            uplift=uplift,
            convert_within_hours=args.convert_within_hours,
            seed=args.seed,
        )
    except ValueError as exc:
        print(f"crmstream: {exc}", file=sys.stderr)
        return 2
    produced = asyncio.run(
        run(
            Settings.from_env(),
            config,
            from_beginning=not args.from_now,
            idle_exit=args.idle_exit,
        )
    )
    print(f"crmstream messaging: {produced} outcome and order records produced", file=sys.stderr)
    return 0


def _report_actions(args: argparse.Namespace) -> int:
    from agents import uplift
    from schemas import codec
    from streams.settings import Settings
    from streams.tools.report import action_report

    since = None
    if args.since:
        try:
            moment = dt.datetime.fromisoformat(args.since)
        except ValueError:
            print(
                f"crmstream: --since: not an ISO 8601 time or date: {args.since}", file=sys.stderr
            )
            return 2
        if moment.tzinfo is None:
            if len(args.since) > 10:
                print("crmstream: --since: a time needs a zone (e.g. Z)", file=sys.stderr)
                return 2
            moment = moment.replace(tzinfo=dt.UTC)
        since = moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    report = asyncio.run(action_report(Settings.from_env(), since))
    if args.json:
        print(codec.dumps(report.as_dict()).decode())
    else:
        print(uplift.table(report))
    return 0


def _tail_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest record")
    p.add_argument("--limit", type=int, default=0, help="stop after this many records")
    p.add_argument("--json", action="store_true", help="print raw JSON records")
    p.add_argument("--idle-exit", type=float, default=0.0, help="exit after this many idle seconds")


def _needs_subcommand(args: argparse.Namespace) -> int:
    print(
        f"crmstream {args.command}: a subcommand is needed; see crmstream {args.command} --help",
        file=sys.stderr,
    )
    return 2


def _stack(args: argparse.Namespace) -> StackOptions:
    from streams.tools.runner import StackOptions

    if args.workers < 1:
        raise SystemExit("crmstream: --workers must be at least 1")
    return StackOptions(
        workers=args.workers,
        partitions=args.partitions,
        workdir=args.workdir,
        rules_file=args.rules,
        clock=args.clock,
        clock_lateness=args.clock_lateness,
    )


def _demo(args: argparse.Namespace) -> int:
    from streams.tools.runner import DemoOptions, demo

    return demo(
        _stack(args),
        DemoOptions(
            seed=args.seed,
            customers=args.customers,
            rate=args.rate,
            duration=args.duration,
            malformed_rate=args.malformed_rate,
            live=not args.no_live,
            summary_path=args.summary,
            messaging=args.messaging,
        ),
    )


def _up(args: argparse.Namespace) -> int:
    from streams.tools.runner import up

    return up(_stack(args))


def _worker(args: argparse.Namespace) -> int:
    from streams.worker import run_worker

    return run_worker()


def _simulate(args: argparse.Namespace) -> int:
    from streams.settings import Settings
    from streams.tools.simulator import Simulator, produce
    from streams.topics import ensure_topics

    settings = Settings.from_env()
    sim = Simulator(
        seed=args.seed,
        customers=args.customers,
        start=args.start,
        malformed_rate=args.malformed_rate,
    )

    started = time.monotonic()
    progress = {"sent": 0, "shown": started}

    def on_sent(record: object) -> None:  # a progress line every 5 s on long runs
        progress["sent"] += 1
        now = time.monotonic()
        if now - progress["shown"] >= 5:
            progress["shown"] = now
            rate = progress["sent"] / (now - started)
            print(f"crmstream: {progress['sent']} events sent ({rate:.0f}/s)", file=sys.stderr)

    async def run() -> int:
        await ensure_topics(settings)
        return await produce(
            settings,
            iter(sim),
            rate=args.rate,
            duration=args.duration,
            limit=args.limit,
            on_sent=on_sent,
        )

    sent = asyncio.run(run())
    print(f"crmstream: sent {sent} events to {settings.broker_bootstrap}", file=sys.stderr)
    return 0


def _replay(args: argparse.Namespace) -> int:
    import signal

    from schemas import codec
    from schemas.errors import ConfigError
    from streams.settings import Settings
    from streams.tools.replay import (
        DEFAULT_SORT_MEMORY_MB,
        Progress,
        RejectsWriter,
        ReplayOptions,
        Source,
        check_columns,
        replay,
    )

    options = ReplayOptions.create(
        map_spec=args.map_spec,
        timezone=args.timezone,
        date_format=args.date_format,
        currency=args.currency,
        return_prefix=args.return_prefix,
    )
    settings = Settings.from_env()  # a dry run too: the lateness settings, the broker to check
    if args.sort_memory is not None and args.sort_memory < 1:
        raise ConfigError("--sort-memory", "must be at least 1 (MiB)")
    sort_memory = (args.sort_memory or DEFAULT_SORT_MEMORY_MB) * 1024 * 1024
    with Source(args.file, args.format) as source:
        check_columns(options, source.columns, str(args.file))
        rejects = RejectsWriter(args.rejects, source) if args.rejects else None
        stop = asyncio.Event()

        def on_connected() -> None:  # Ctrl-C from now on: stop reading, flush, summarise
            loop = asyncio.get_running_loop()

            def interrupt() -> None:
                stop.set()
                loop.remove_signal_handler(signal.SIGINT)  # a second Ctrl-C aborts

            loop.add_signal_handler(signal.SIGINT, interrupt)

        try:
            with Progress(source.size, args.dry_run) as progress:
                summary = asyncio.run(
                    replay(
                        source,
                        options,
                        settings,
                        dry_run=args.dry_run,
                        assume_sorted=args.assume_sorted,
                        sort_memory=sort_memory,
                        rejects=rejects,
                        progress=progress,
                        stop=stop,
                        on_connected=on_connected,
                    )
                )
        finally:
            if rejects is not None:
                rejects.close()

    print(codec.dumps(summary.as_dict()).decode() if args.json else summary.render())
    if summary.broker_error:
        print(f"crmstream: the broker failed: {summary.broker_error}", file=sys.stderr)
        return 1
    if summary.input_error:
        print(f"crmstream: {summary.input_error}", file=sys.stderr)
        return 2
    return 130 if summary.interrupted else 0


def _tail(
    args: argparse.Namespace,
    topic_of: Callable[[Settings], str],
    line: Callable[[dict[str, Any]], str],
) -> int:
    from schemas import codec
    from streams.settings import Settings
    from streams.tools.watch import tail

    settings = Settings.from_env()

    async def run() -> None:
        seen = 0
        async for record in tail(
            settings,
            topic_of(settings),
            from_beginning=args.from_beginning,
            idle_timeout=args.idle_exit,
        ):
            print(codec.dumps(record).decode() if args.json else line(record), flush=True)
            seen += 1
            if args.limit and seen >= args.limit:
                return

    asyncio.run(run())
    return 0


def _actions_tail(args: argparse.Namespace) -> int:
    from streams.tools.watch import describe_action

    return _tail(args, lambda s: s.topics.actions, describe_action)


def _dlq_tail(args: argparse.Namespace) -> int:
    def line(d: dict[str, Any]) -> str:
        return (
            f"{d.get('error_code', '?'):<26} {d.get('source_topic')}[{d.get('source_partition')}]"
            f"@{d.get('source_offset')}  {d.get('error', '')}"
        )

    return _tail(args, lambda s: s.topics.dlq, line)


def _customer(args: argparse.Namespace) -> int:
    from streams.tools.lookup import CustomerLookupError, fetch, render

    if args.url is None:
        args.url = _default_url()
    try:
        doc = fetch(args.url, args.customer_id, args.as_of)
    except CustomerLookupError as exc:
        print(f"crmstream: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(doc, indent=2) if args.json else render(doc))
    return 0


def _default_url() -> str:
    """The worker address the lookup commands use without --url."""
    from streams.settings import Settings

    settings = Settings.from_env()
    return f"http://{settings.web_host}:{settings.web_port}"


def _clock_tick(args: argparse.Namespace) -> int:
    from schemas.ingress import TIME_FLOOR
    from streams.as_of import iso, parse_time
    from streams.settings import Settings
    from streams.tools.clock_admin import send_ticks

    settings = Settings.from_env()
    now = time.time()
    try:
        at = parse_time(args.to, "--to", now=now)
    except ValueError as exc:
        print(f"crmstream: {exc}", file=sys.stderr)
        return 2
    if at < TIME_FLOOR:
        print(f"crmstream: --to {iso(at)} is before {iso(TIME_FLOOR)}", file=sys.stderr)
        return 2
    if at > now + settings.max_clock_skew:
        print(
            f"crmstream: --to {iso(at)} is later than now + CRM_MAX_CLOCK_SKEW "
            f"({iso(now + settings.max_clock_skew)}): the workers would refuse it "
            "(future_event_time)",
            file=sys.stderr,
        )
        return 2
    topic = settings.topics.by_family[args.topic]
    ok, sent = _with_broker(lambda: send_ticks(settings, topic, at, args.connect_timeout))
    if not ok:
        return 1
    for tick, offset in sent:
        print(f"{tick.topic}[{tick.partition}]@{offset}  clock.tick {iso(at)}  {tick.event_id}")
    print(
        f"crmstream: sent a clock.tick at {iso(at)} to {len(sent)} partition(s) of {topic} "
        f"on {settings.broker_bootstrap}",
        file=sys.stderr,
    )
    return 0


def _clock_show(args: argparse.Namespace) -> int:
    from streams.tools.clock_admin import ClockError, fetch_clock, render_clock

    urls = args.url or [_default_url()]
    docs: dict[str, Any] = {}
    failed = 0
    for url in urls:
        try:
            docs[url] = fetch_clock(url)
        except ClockError as exc:
            print(f"crmstream: {exc}", file=sys.stderr)
            failed += 1
            continue
        if not args.json:
            print(render_clock(url, docs[url]))
    if args.json:
        print(json.dumps(docs, indent=2))
    return 1 if failed else 0


def _flags_list(args: argparse.Namespace) -> int:
    from schemas import codec
    from streams.settings import Settings
    from streams.tools.flag_admin import read_flags

    settings = Settings.from_env()
    ok, log = _with_broker(lambda: read_flags(settings, args.connect_timeout))
    if not ok:
        return 1
    shown = log.select(open_only=args.open, kind=args.kind)
    if args.json:
        print(codec.dumps([f.as_dict() for f in shown]).decode())
    else:
        for flag in shown:
            print(flag.line())
    open_count = sum(1 for f in log.flags.values() if f.status == "open")
    print(
        f"crmstream: {len(shown)} flag(s) shown; {len(log.flags)} on {settings.topics.flags}, "
        f"{open_count} open",
        file=sys.stderr,
    )
    if log.unreadable:
        print(
            f"crmstream: {log.unreadable} record(s) on {settings.topics.flags} are not flag "
            "records and were skipped",
            file=sys.stderr,
        )
    return 0


def _flags_review(args: argparse.Namespace) -> int:
    import getpass

    from streams.settings import Settings
    from streams.tools.flag_admin import FlagReviewError, plan_review, read_flags, send

    reason = args.reason.strip()
    by = (args.by or "").strip()
    if not by:
        try:
            by = getpass.getuser()
        except (OSError, KeyError):
            by = "operator"
    if not reason or len(reason) > 500:
        print("crmstream: --reason must be 1 to 500 characters", file=sys.stderr)
        return 2
    if len(by) > 100:
        print("crmstream: --by must be at most 100 characters", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    ok, log = _with_broker(lambda: read_flags(settings, args.connect_timeout))
    if not ok:
        return 1
    view = log.flags.get(args.flag_id)
    if view is None:
        print(
            f"crmstream: no flag {args.flag_id} on {settings.topics.flags} "
            "(see crmstream flags list)",
            file=sys.stderr,
        )
        return 1
    try:
        outgoing = plan_review(view, args.decision, reason, by, settings, dt.datetime.now(dt.UTC))
    except FlagReviewError as exc:
        print(f"crmstream: {exc}", file=sys.stderr)
        return 1
    if not _with_broker(lambda: send(settings, outgoing))[0]:
        return 1
    who = f"customer {view.customer_id}" if view.customer_id else view.subject or "-"
    print(
        f"crmstream: flag {view.flag_id} ({view.kind}, {who}) {args.decision} by {by}: "
        f"{outgoing.description}"
    )
    return 0


def _with_broker(call: Callable[[], Any]) -> tuple[bool, Any]:
    """``(True, asyncio.run(call()))``, or ``(False, None)`` after printing why the
    broker failed (unreachable, or an error from it)."""
    from aiokafka.errors import KafkaError

    from schemas.errors import BrokerUnreachable

    try:
        return True, asyncio.run(call())
    except (BrokerUnreachable, KafkaError) as exc:
        print(f"crmstream: the broker failed: {exc or type(exc).__name__}", file=sys.stderr)
        return False, None


def _topics(args: argparse.Namespace) -> int:
    from streams.settings import Settings
    from streams.topics import ensure_topics

    settings = Settings.from_env()
    created = asyncio.run(ensure_topics(settings))
    print(f"crmstream: created {len(created)} topic(s): {', '.join(created) or 'none needed'}")
    return 0


def _settings_check(args: argparse.Namespace) -> int:
    from streams.settings import Settings
    from streams.tools import settings_doc

    changed = settings_doc.changed(Settings.from_env())
    print(f"crmstream: the settings are valid; {len(changed)} changed from their defaults")
    for name, value in changed.items():
        print(f"  {name}={value}")
    return 0


def _settings_reference(args: argparse.Namespace) -> int:
    from streams.tools import settings_doc

    sys.stdout.write(settings_doc.reference())
    return 0


def _schemas(args: argparse.Namespace) -> int:
    from schemas import export
    from streams.tools import schema_files

    directory = args.out or export.SCHEMA_DIR
    if args.check:
        stale = schema_files.stale_files(directory)
        if stale:
            print(f"crmstream: stale schema files: {', '.join(stale)}", file=sys.stderr)
            return 1
        print("crmstream: schema files are current")
        return 0
    for path in schema_files.write(directory):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
