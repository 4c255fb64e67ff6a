"""The demo's live terminal view (rich), or periodic plain lines when not a TTY."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from streams.tools.watch import Tally

#: Seconds between reads of each worker's ``/clock``.
CLOCK_EVERY = 2.0


class LiveView:
    def __init__(
        self, tally: Tally, web_urls: list[str], live: bool = True, clock: str = ""
    ) -> None:
        self.tally = tally
        self.web_urls = web_urls
        self.live = live and sys.stdout.isatty()
        self.started = time.monotonic()
        #: The clock in words (mode, lateness), from the settings.
        self.clock = clock
        #: Per worker URL, its last ``/clock`` document (None: not answered yet).
        self.clocks: dict[str, dict[str, Any] | None] = dict.fromkeys(web_urls)

    async def run(self, stop: asyncio.Event) -> None:
        poller = asyncio.create_task(self._poll_clocks(stop))
        try:
            if not self.live:
                await self._plain(stop)
                return
            with Live(self.render(), console=Console(), refresh_per_second=4, screen=False) as live:
                while not stop.is_set():
                    live.update(self.render())
                    await asyncio.sleep(0.25)
                live.update(self.render())
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller

    async def _poll_clocks(self, stop: asyncio.Event) -> None:
        """Read every worker's ``/clock`` every :data:`CLOCK_EVERY` seconds (in a thread:
        a slow worker never stalls the view)."""
        from streams.tools.clock_admin import ClockError, fetch_clock

        while not stop.is_set():
            for url in self.web_urls:
                try:
                    self.clocks[url] = await asyncio.to_thread(fetch_clock, url, 1.0)
                except ClockError:
                    self.clocks[url] = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=CLOCK_EVERY)

    def watermarks(self) -> str:
        """Each worker's partitions and their watermarks, e.g. ``:6066 p0 2026-01-03 10:00``."""
        out = []
        for url in self.web_urls:
            doc = self.clocks.get(url)
            where = url.rsplit(":", 1)[-1]
            if doc is None:
                out.append(f":{where} -")
                continue
            parts = sorted(doc.get("partitions", {}).items(), key=lambda kv: int(kv[0]))
            marks = " ".join(
                f"p{p} {(c.get('watermark') or '-')[:16].replace('T', ' ')}" for p, c in parts
            )
            out.append(f":{where} {marks or 'no partitions'}")
        return " · ".join(out)

    def earliest_watermark(self) -> str:
        """The earliest watermark of any partition (``-`` if none yet)."""
        marks = [
            c["watermark"]
            for doc in self.clocks.values()
            if doc
            for c in doc.get("partitions", {}).values()
            if c.get("watermark")
        ]
        return min(marks)[:19] if marks else "-"

    async def _plain(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=5.0)
            s = self.tally.summary()
            print(
                f"[{time.monotonic() - self.started:6.1f}s] events sent {s['events_produced']:>7}  "
                f"actions {s['actions']:>5}  dead letters {s['dead_letters']:>4}  "
                f"watermark {self.earliest_watermark()}",
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
        lines = [f"Prometheus metrics: {where}"]
        if self.clock:
            lines.append(f"Clock: {self.clock}")
            lines.append(f"Watermarks: {self.watermarks()}")
        lines.append("Ctrl-C stops everything.")
        header = Panel("\n".join(lines), title="crmstream demo")
        columns = Table.grid(expand=True, padding=(0, 1))
        columns.add_column(ratio=2)
        columns.add_column(ratio=3)
        columns.add_row(produced, Group(out, dead))
        return Group(header, columns, recent)
