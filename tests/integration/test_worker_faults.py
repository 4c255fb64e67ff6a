"""Faults around the worker, on the real broker and Redis (issue 12): Redis away or back
empty (the action ledger is refilled), the broker gone (/readyz 503), a rebalance that
never gives an assignment (leave and rejoin), a worker that dies under ``crmstream up``
(started again).

Tests that stop a broker or a Redis start their own (:class:`Stack`), never the
session's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from streams.ledger import KEY_PREFIX, ActionLedger
from streams.settings import Settings
from streams.tools.embedded import Child, Stack, free_port
from streams.tools.runner import worker_env
from streams.topics import ensure_topics
from tests.integration.broker import EventFactory, consume, metric_value, produce

pytestmark = pytest.mark.integration

#: Care timers off (they would add actions), marketing opt-out (no consent events needed).
RULES = '[care]\nenabled = false\n[policy.consent]\nmarketing = "opt_out"\n'


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


def metrics_of(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def log_tail(child: Child, chars: int = 4000) -> str:
    return child.log_path.read_text(errors="replace")[-chars:]


# -- the action ledger: Redis away, Redis back empty -------------------------------------


async def refilled(ledger: ActionLedger, tries: int = 5) -> int:
    """What the worker's refill timer (every second) records over a few ticks: the first
    call after Redis came back may meet a stale connection."""
    written = 0
    for _ in range(tries):
        written += await ledger.refill()
        if written and not ledger.pending:
            break
        await asyncio.sleep(0.2)
    return written


def test_the_ledger_records_a_rounds_ids_in_one_command_each_with_its_ttl(own_redis):
    # A pipeline of one SET per id cost the worker ~17 µs of CPU per action sent (each
    # command packed, each reply parsed): on the simulator mix, ~6 % of its CPU.
    r = redis.Redis.from_url(own_redis.redis_url)
    ids = [f"round-{i:04d}" for i in range(700)]

    async def record() -> None:
        ledger = ActionLedger(own_redis.redis_url, ttl_days=30)
        await ledger.record(ids[:1])  # the first round: the script is loaded into Redis
        r.config_resetstat()
        await ledger.record(ids[1:])
        await ledger.close()

    asyncio.run(record())
    stats = r.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == 1, stats
    assert stats["cmdstat_set"]["calls"] == len(ids) - 1  # inside the one command
    ttl = 30 * 86_400
    assert all(ttl - 60 < r.ttl(KEY_PREFIX + a) <= ttl for a in ids)
    assert r.mget([KEY_PREFIX + a for a in ids]) == [b"1"] * len(ids)


def test_a_ledger_refused_scripting_still_records_every_id_by_its_refill(own_redis):
    # README, REDIS_USERNAME: an ACL user without the scripting commands. Each round's
    # ids then wait as pending, and the refill (every second) records them one SET each.
    r = redis.Redis.from_url(own_redis.redis_url)
    r.acl_setuser(
        "noscript",
        enabled=True,
        passwords=["+pw"],
        keys=["crm:*"],
        commands=["+@all", "-@scripting"],
    )
    url = own_redis.redis_url.replace("redis://", "redis://noscript:pw@", 1)

    async def scenario() -> tuple[int, int]:
        ledger = ActionLedger(url, ttl_days=30)
        await ledger.record(["acl-1", "acl-2"])
        waiting = ledger.pending
        written = await refilled(ledger)
        await ledger.close()
        return waiting, written

    assert asyncio.run(scenario()) == (2, 2)
    for action_id in ("acl-1", "acl-2"):
        assert 0 < r.ttl(KEY_PREFIX + action_id) <= 30 * 86_400, action_id


def test_the_ledger_records_what_was_sent_while_redis_was_down_and_again_after_an_empty_restart(
    own_redis,
):
    r = redis.Redis.from_url(own_redis.redis_url)
    ttl = 30 * 86_400

    async def scenario() -> None:
        ledger = ActionLedger(own_redis.redis_url, ttl_days=30)
        await ledger.refill()  # knows the server
        # Given Redis is down while two actions go out
        own_redis.stop_redis()
        await ledger.record(["down-1", "down-2"])
        assert ledger.pending == 2
        assert await ledger.unsent(["down-1", "new"]) == {"new"}  # it still knows what it sent
        # When Redis answers again
        own_redis.start_redis(own_redis.redis_port)
        assert await refilled(ledger) == 2
        assert ledger.pending == 0
        await ledger.record(["up-1"])
        # And later restarts without its data
        own_redis.restart_redis()
        ledger._next_check = 0.0  # its identity is checked every few seconds
        assert await refilled(ledger) == 3
        # And records the next round into the new server (which lost the ledger's script)
        await ledger.record(["after-restart"])
        assert ledger.pending == 0
        await ledger.close()

    asyncio.run(scenario())

    # Then every id is in the ledger, with at most the ledger's TTL
    for action_id in ("down-1", "down-2", "up-1", "after-restart"):
        assert 0 < r.ttl(KEY_PREFIX + action_id) <= ttl, action_id


def test_actions_sent_while_redis_is_down_are_in_the_ledger_once_it_is_back(
    crm_settings, workers, own_redis, tmp_path
):
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    settings = crm_settings.replace(redis_url=own_redis.redis_url, rules_file=str(rules))
    workers.settings = settings
    events = EventFactory(settings)
    r = redis.Redis.from_url(own_redis.redis_url)
    _, port = workers.start()

    # Given Redis is down while 30 new customers buy (30 welcomes go out)
    own_redis.stop_redis()
    customers = [f"rd-{i:02d}" for i in range(30)]
    produce(settings, [events.order(c, order_id=f"{c}-1") for c in customers])
    actions = consume(settings, settings.topics.actions, until=lambda rs: len(rs) >= 30, settle=1.0)
    ids = {a["action_id"] for a in actions}
    assert len(ids) == 30
    wait_for(
        lambda: metric_value(metrics_of(port), "crm_ledger_pending_ids") >= 30,
        20,
        "the unrecorded ids counted",
    )

    # When Redis comes back (empty)
    own_redis.start_redis(own_redis.redis_port)

    # Then every action sent meanwhile is in the ledger, and nothing waits any more
    wait_for(lambda: all(r.exists(KEY_PREFIX + i) for i in ids), 20, "the ledger refilled")
    page = metrics_of(port)
    assert metric_value(page, "crm_ledger_pending_ids") == 0
    assert metric_value(page, "crm_ledger_refilled_total") >= 30

    # And when Redis restarts without its data, the worker records them again
    own_redis.restart_redis()  # no persistence: it comes back with nothing
    r = redis.Redis.from_url(own_redis.redis_url)
    wait_for(lambda: all(r.exists(KEY_PREFIX + i) for i in ids), 30, "the ledger re-recorded")


# -- a stack of the test's own: broker and Redis ------------------------------------------


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[tuple[Stack, Settings]]:
    """A broker and a Redis of this test's own, to stop; settings for them."""
    with Stack(tmp_path / "own-stack") as stack:
        stack.start_broker()
        stack.start_redis()
        rules = tmp_path / "rules.toml"
        rules.write_text(RULES)
        settings = Settings(
            kafka_broker=stack.broker_url,
            redis_url=stack.redis_url,
            app_id="faults",
            partitions=2,
            session_timeout=6.0,
            rebalance_timeout=6.0,
            rules_file=str(rules),
        )
        asyncio.run(ensure_topics(settings))
        yield stack, settings


def start_worker(
    stack: Stack, settings: Settings, tmp: Path, name: str, index: int | None = None, **env: str
) -> tuple[Child, int]:
    port = free_port()
    full = worker_env(settings, port, tmp / name, index) | env
    return stack.start_worker(name, full), port


def wait_ready(child: Child, port: int, timeout: float = 60) -> None:
    def ready() -> bool:
        assert child.proc.poll() is None, log_tail(child)
        return http_status(f"http://127.0.0.1:{port}/readyz") == 200

    wait_for(ready, timeout, f"{child.name} ready")


def test_readyz_turns_503_within_the_session_timeout_once_the_broker_is_gone(own_stack, tmp_path):
    stack, settings = own_stack
    child, port = start_worker(stack, settings, tmp_path, "w0")
    wait_ready(child, port)
    url = f"http://127.0.0.1:{port}"
    broker = next(c for c in stack.children if c.name == "broker")

    # When the broker hangs (its connections stay open, nothing answers)
    hung = time.monotonic()
    os.killpg(broker.proc.pid, signal.SIGSTOP)
    try:
        # Then /readyz answers 503 within the session timeout, saying why
        wait_for(lambda: http_status(url + "/readyz") == 503, settings.session_timeout, "503")
        took = time.monotonic() - hung
        body = http_body(url + "/readyz")
        assert body["ready"] is False and body["broker_unreachable"] is True, body
        assert body["broker_silence_seconds"] > 0
        # And the worker is alive: /livez stays 200, the silence is on /metrics
        assert http_status(url + "/livez") == 200
        assert metric_value(metrics_of(port), "crm_broker_silence_seconds") > 0
    finally:
        os.killpg(broker.proc.pid, signal.SIGCONT)

    # When it answers again, the worker is ready again
    wait_for(lambda: http_status(url + "/readyz") == 200, 60, "ready again")

    # And when the broker is gone for good, 503 again within the session timeout
    gone = time.monotonic()
    stack.stop_broker()
    wait_for(
        lambda: http_status(url + "/readyz") == 503,
        max(0.0, settings.session_timeout - (time.monotonic() - gone)),
        "503 after the broker stopped",
    )
    assert http_status(url + "/livez") == 200
    assert child.proc.poll() is None
    print(f"/readyz 503 {took:.1f} s after the broker hung")


def http_body(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return dict(json.loads(r.read()))
    except urllib.error.HTTPError as exc:
        return dict(json.loads(exc.read()))


# -- a rebalance that never gives an assignment ---------------------------------------------


def test_a_worker_never_given_partitions_leaves_the_group_and_joins_again(own_stack, tmp_path):
    """The zombie: on Tansu 0.6 a static member that died stays the group's leader while
    every member that calls is static (its missed-heartbeat sweep is skipped for them), so
    a newcomer with another static name joins again and again, never assigned."""
    stack, settings = own_stack
    # Given a static member (faults-worker-0) that dies for good
    first, first_port = start_worker(stack, settings, tmp_path, "w0", index=0)
    wait_ready(first, first_port)
    first.kill()

    # When a worker with another static name joins, rejoining after 15 s without partitions
    child, port = start_worker(
        stack, settings, tmp_path, "w1", index=1, CRM_ASSIGNMENT_TIMEOUT="15"
    )
    url = f"http://127.0.0.1:{port}"

    # Then it is stuck first (the broker's fault, not the worker's) ...
    time.sleep(12)
    assert http_status(url + "/readyz") != 200, "not stuck: has Tansu been fixed?"
    stuck = log_tail(child, 100_000)
    assert "Joined group" in stuck and "Successfully synced" not in stuck, stuck[-3000:]
    # ... then leaves the group, joins again and gets every partition, and says so
    wait_ready(child, port, timeout=45)
    log = log_tail(child, 100_000)
    assert "leaving group faults and joining again, attempt 1" in log, log[-3000:]
    assert "deploy/RUNBOOK.md" in log
    assert metric_value(metrics_of(port), "crm_group_rejoins_total") >= 1


# -- crmstream up starts a worker that dies again ---------------------------------------------


CLI = [sys.executable, "-m", "streams.tools.cli"]


@pytest.mark.parametrize(
    "session",
    [None, "6"],
    ids=["stack-session-dynamic-member", "long-session-static-member"],
)
def test_up_starts_a_worker_that_dies_again_under_its_own_name(tmp_path, session):
    """At the stack's own 3 s session the lone worker is a dynamic member (it restarts
    faster on the embedded broker: streams.tools.runner.STATIC_AFTER): it comes back as
    a new member once the dead one's session ended. With a longer session it is a
    static member and takes its own member back."""
    workdir = tmp_path / "up"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "KAFKA_", "REDIS_"))}
    if session is not None:
        env["CRM_SESSION_TIMEOUT"] = session
    up = subprocess.Popen(
        [*CLI, "up", "--workdir", str(workdir), "--partitions", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    lines: list[str] = []

    def read_until(pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        assert up.stdout is not None
        while time.monotonic() < deadline:
            line = up.stdout.readline()
            lines.append(line)
            found = re.search(pattern, line)
            if found:
                return found
            assert up.poll() is None, "".join(lines)
        raise AssertionError(f"no {pattern!r} in:\n{''.join(lines)}")

    try:
        url = read_until(r"worker metrics:\s+(http://\S+)/metrics", 120).group(1)
        read_until(r"crmstream: up\.", 30)
        assert http_status(url + "/readyz") == 200
        log = workdir / "worker-0.log"
        member = re.findall(r"member_id (\S+)", log.read_text(errors="replace"))[-1]
        pid = int(re.findall(r"\[(\d+)\] \[INFO\]", log.read_text(errors="replace"))[-1])

        # When the worker is SIGKILLed
        os.kill(pid, signal.SIGKILL)

        # Then up says so and starts it again, and it is ready again at the same address
        said = read_until(r"worker-0 exited \((.+)\); restarting in (\S+) s \(attempt 1\)", 30)
        assert said.group(1) == "killed by SIGKILL"
        read_until(r"worker-0 ready again at " + re.escape(url), 90)
        assert http_status(url + "/readyz") == 200
        members = re.findall(r"member_id (\S+)", log.read_text(errors="replace"))
        if session is None:  # a dynamic member: a new one, the dead one expired
            assert members[-1] != member
        else:  # under the same static membership name: it took its own member back
            assert members[-1] == member
        assert up.poll() is None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(up.pid, signal.SIGINT)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:  # pragma: no cover
            os.killpg(up.pid, signal.SIGKILL)
            up.wait(10)


# -- standby replicas ------------------------------------------------------------------------


def test_with_a_standby_replica_a_failover_keeps_every_welcome_exactly_once(
    crm_settings, workers, tmp_path
):
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    settings = crm_settings.replace(rules_file=str(rules), standby_replicas=1)
    workers.settings = settings
    events = EventFactory(settings)
    first, _ = workers.start()
    second, port = workers.start()
    old = [f"sb-{i:02d}" for i in range(40)]
    produce(settings, [events.order(c, order_id=f"{c}-1") for c in old])
    consume(settings, settings.topics.actions, until=lambda rs: len(rs) >= 40, settle=1.0)

    # When one of the two workers dies
    first.kill()

    # Then the other takes every partition; nobody is welcomed twice, newcomers once
    new = [f"sb-new-{i:02d}" for i in range(20)]
    produce(settings, [events.order(c, order_id=f"{c}-2") for c in old])
    produce(settings, [events.order(c, order_id=f"{c}-1") for c in new])
    actions = consume(settings, settings.topics.actions, until=lambda rs: len(rs) >= 60)
    welcomes = [a["customer_id"] for a in actions if a["action_type"] == "welcome"]
    assert sorted(welcomes) == sorted(old + new)
    log = second.log_path.read_text(errors="replace")
    assert "Standby" in log, "no standby partitions were assigned"
    assert "Traceback" not in log, log[-3000:]
    assert metric_value(metrics_of(port), "crm_worker_ready") == 1
