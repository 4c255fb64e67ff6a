"""The demo's live terminal view (rich), or periodic plain lines when not a TTY."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from streams.watch import Tally


class LiveView:
    def __init__(self, tally: Tally, web_urls: list[str], live: bool = True) -> None:
        self.tally = tally
        self.web_urls = web_urls
        self.live = live and sys.stdout.isatty()
        self.started = time.monotonic()

    async def run(self, stop: asyncio.Event) -> None:
        if not self.live:
            await self._plain(stop)
            return
        with Live(self.render(), console=Console(), refresh_per_second=4, screen=False) as live:
            while not stop.is_set():
                live.update(self.render())
                await asyncio.sleep(0.25)
            live.update(self.render())

    async def _plain(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=5.0)
            s = self.tally.summary()
            print(
                f"[{time.monotonic() - self.started:6.1f}s] events sent {s['events_produced']:>7}  "
                f"actions {s['actions']:>5}  dead letters {s['dead_letters']:>4}",
                flush=True,
            )

    def render(self) -> Group:
        t = self.tally
        elapsed = max(time.monotonic() - self.started, 1e-6)
        produced = Table(title="Events in (sent by the simulator), by type", expand=True)
        produced.add_column("type")
        produced.add_column("count", justify="right")
        produced.add_column("per s", justify="right")
        for kind, n in sorted(t.produced_types.items()):
            style = "[red]" if kind == "(malformed)" else ""
            produced.add_row(f"{style}{kind}", str(n), f"{n / elapsed:.0f}")

        out = Table(title="Actions out (crm.actions)", expand=True)
        out.add_column("type")
        out.add_column("count", justify="right")
        for kind, n in sorted(t.actions.items()):
            out.add_row(kind, str(n))
        out.add_row("[yellow]repeated action ids seen[/yellow]", str(t.duplicate_action_ids))

        recent = Table(title="Latest actions", expand=True)
        for col in ("event time", "type", "customer", "channel", "reason"):
            recent.add_column(col, overflow="fold")
        for a in reversed(t.recent_actions):
            recent.add_row(
                str(a.get("created_at", ""))[:19],
                a.get("action_type", ""),
                a.get("customer_id", ""),
                a.get("channel", ""),
                a.get("reason", ""),
            )

        dead = Table(title="Dead letters (crm.dlq)", expand=True)
        dead.add_column("code")
        dead.add_column("count", justify="right")
        dead.add_column("latest reason", overflow="fold")
        for code, n in sorted(t.dead_letters.items()):
            dead.add_row(code, str(n), t.latest_reason.get(code, ""))

        where = " · ".join(f"{u}/metrics" for u in self.web_urls)
        header = Panel(
            f"Prometheus metrics: {where}\nCtrl-C stops everything.", title="crmstream demo"
        )
        columns = Table.grid(expand=True, padding=(0, 1))
        columns.add_column(ratio=2)
        columns.add_column(ratio=3)
        columns.add_row(produced, Group(out, dead))
        return Group(header, columns, recent)
