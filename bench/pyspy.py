"""Optional profiling of the benchmark's worker with py-spy (bench-only helper).

py-spy attaches to the running worker by pid for the drain window only, writes
collapsed stacks, and :func:`summarize` turns them into self / inclusive shares
per function. py-spy pauses the worker for each sample (its default): with
``--nonblocking`` a third of the samples came back torn or truncated.

py-spy is not a crmstream dependency: ``pip install py-spy`` into the venv.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def py_spy_binary() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


@dataclass
class Sampler:
    proc: subprocess.Popen[bytes]
    out: Path
    log: Path
    rate: int

    @classmethod
    def attach(cls, pid: int, out: Path, rate: int = 100) -> Sampler:
        binary = py_spy_binary()
        if binary is None:
            raise RuntimeError(f"py-spy not found: {sys.executable} -m pip install py-spy")
        log = out.with_suffix(".log")
        with open(log, "wb") as sink:
            proc = subprocess.Popen(
                [
                    binary,
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    str(rate),
                    "--format",
                    "raw",
                    "--function",
                    "--output",
                    str(out),
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return cls(proc, out, log, rate)

    def stop(self, timeout: float = 60.0) -> None:
        """SIGINT (py-spy then writes its output), SIGKILL if it hangs."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


#: The stacks of threads other than the event loop's: faust's consumer thread (the
#: collapsed stacks carry no thread label; its stacks start in ``threading``).
THREAD_MARKERS = ("WorkerThread.run", "Thread._bootstrap")
CONSUMER_THREAD = "consumer thread (aiokafka fetch loop; includes its idle select)"

#: Where a crmstream worker's time goes, first match wins (so the consumer thread is
#: taken out of every bucket below it: its fetch requests pass through
#: ``AIOKafkaClient.send``, a producer marker; and "debug log records" out of the rest).
#: Markers are substrings of a stack.
BUCKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (CONSUMER_THREAD, THREAD_MARKERS),
    ("debug log records built (root logger left at DEBUG)", ("Logger._log",)),
    ("ingress: admit (orjson + pydantic validation)", ("admit (",)),
    ("input feed: fetched batches into the merges", ("InputFeed.drain", "InputMerges.accept")),
    ("state load and copy, gauge basis (_held)", ("_held (", "CustomerState.copy")),
    ("state serialisation: to_dict + JSON (stored_forms)", ("stored_forms (",)),
    ("timer sweeps (fire_timers)", ("fire_timers (",)),
    ("fold: the rules per event (decide)", ("decide (",)),
    ("fold, other: dedupe, bookkeeping (fold_items)", ("fold_items (",)),
    ("outputs: sent and acked (CustomerAgent._send)", ("CustomerAgent._send (",)),
    ("changelog write: table store + record batches", ("write_changelog (",)),
    (
        "state packing, then the write's bookkeeping (CustomerAgent._write)",
        ("CustomerAgent._write (",),
    ),
    ("metrics counted per round (CustomerAgent._observe)", ("CustomerAgent._observe (",)),
    ("after the write: timer index, gauges", ("CustomerAgent._after_write (",)),
    ("handle_round, other: merge release, metrics", ("handle_round (",)),
    ("Redis profile projection", ("ProfileProjection.",)),
    (
        "producer: aiokafka's send path and sender task",
        ("AIOKafkaProducer.", "Sender._sender_routine", "AIOKafkaClient.send"),
    ),
    ("metrics page", ("metrics_page",)),
)
OTHER = "event loop (uvloop internals) and everything else"


def summarize(
    path: Path,
    seconds: float,
    rate: int,
    top: int = 30,
    cpu: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks,
    and each bucket's share of all samples and of the event loop thread's alone.

    Only samples of threads py-spy took for active are recorded (no ``--idle``), so
    ``busy_share`` = samples / (seconds * rate) says how busy the threads looked. A
    thread waiting for the GIL looked active: at 100k customers py-spy counted the
    consumer thread in 24 % of the samples while /proc gave it 5 % of the worker's
    CPU. ``cpu``: the CPU seconds /proc counted over the same window, ``worker``
    (every thread) and ``loop`` (the event loop's thread), to print beside them.
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";")]
        # the first frame is py-spy's thread label ("process 123:..." / thread name)
        frames = [f for f in frames if not f.startswith(("process ", "thread "))] or frames
        total += n
        buckets[_bucket(stack)] += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n

    def table(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "samples": n, "share": round(n / total, 4) if total else 0.0}
            for name, n in counter.most_common(top)
        ]

    loop = total - buckets[CONSUMER_THREAD]
    return {
        "samples": total,
        "loop_samples": loop,
        "rate_hz": rate,
        "seconds": round(seconds, 2),
        "busy_share": round(total / (seconds * rate), 3) if seconds > 0 else None,
        "cpu_seconds": dict(cpu) if cpu else None,
        "buckets": [
            {
                "bucket": name,
                "samples": n,
                "share": round(n / total, 4) if total else 0.0,
                "loop_share": round(n / loop, 4) if loop and name != CONSUMER_THREAD else 0.0,
            }
            for name, n in buckets.most_common()
        ],
        "self": table(own),
        "inclusive": table(inclusive),
    }


def _bucket(stack: str) -> str:
    for name, markers in BUCKETS:
        if any(marker in stack for marker in markers):
            return name
    return OTHER


def _short(frame: str) -> str:
    """'fn (/long/path/site-packages/pkg/mod.py:12)' -> 'fn (pkg/mod.py:12)'."""
    name, sep, where = frame.partition(" (")
    if not sep:
        return frame
    where = where.rstrip(")")
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{name} ({where})"


def render(summary: dict[str, Any], top: int = 20) -> str:
    lines = [
        f"py-spy: {summary['samples']} on-CPU samples over {summary['seconds']} s at "
        f"{summary['rate_hz']} Hz (~{(summary['busy_share'] or 0) * 100:.0f}% of one CPU, "
        "all threads)",
    ]
    cpu, seconds = summary.get("cpu_seconds"), summary["seconds"]
    if cpu and seconds:
        worker, loop = cpu["worker"] / seconds, cpu["loop"] / seconds
        lines.append(
            f"/proc: the worker {worker:.0%}, its event loop's thread {loop:.0%}, the others "
            f"{worker - loop:.0%} of one CPU (py-spy counts a thread that waits for the GIL "
            "as on CPU: read the consumer thread's samples as an upper bound)"
        )
    lines += [
        "",
        "   share    loop   where (each sample counted once, first matching bucket; loop:",
        "                   of the event loop thread's samples alone)",
    ]
    lines += [
        f"  {r['share'] * 100:6.1f}  {r.get('loop_share', 0.0) * 100:6.1f}  {r['bucket']}"
        for r in summary["buckets"]
    ]
    lines += ["", "  self %  function (time spent in the function itself, C calls included)"]
    lines += [f"  {r['share'] * 100:6.1f}  {r['function']}" for r in summary["self"][:top]]
    lines += ["", "  incl %  function (time in the function and everything it calls)"]
    lines += [f"  {r['share'] * 100:6.1f}  {r['function']}" for r in summary["inclusive"][:top]]
    return "\n".join(lines)
