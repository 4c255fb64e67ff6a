"""The action ledger's memory of what Redis could not record (streams.ledger), on a fake
Redis; tests/integration/test_worker_faults.py runs it against a real one."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from prometheus_client import REGISTRY
from redis.exceptions import ConnectionError as RedisConnectionError

from streams import ledger as ledger_module
from streams import metrics
from streams.ledger import KEY_PREFIX, RECORD_SCRIPT, ActionLedger


class FakeRedis:
    """Just what the ledger calls; ``up = False`` makes every call fail as a refused
    connection; ``run_id`` changes when it "restarts" (``restart()`` also empties it)."""

    def __init__(self) -> None:
        self.up = True
        self.data: dict[str, int] = {}  # key -> TTL seconds
        self.run_id = "a"
        self.identity_asked = 0  # INFO calls
        self.pipelines: list[int] = []  # the SETs of each pipeline executed

    def restart(self) -> None:
        self.data.clear()
        self.run_id += "'"

    def _check(self) -> None:
        if not self.up:
            raise RedisConnectionError("Connection refused")

    async def mget(self, keys: list[str]) -> list[Any]:
        self._check()
        return [b"1" if k in self.data else None for k in keys]

    async def info(self, section: str) -> dict[str, str]:
        self._check()
        self.identity_asked += 1
        return {"run_id": self.run_id}

    def pipeline(self, transaction: bool = False) -> FakePipeline:
        return FakePipeline(self)

    def register_script(self, source: str) -> FakeRecordScript:
        assert source == RECORD_SCRIPT
        return FakeRecordScript(self)

    async def aclose(self) -> None:
        return None


class FakePipeline:
    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis
        self.sets: list[tuple[str, int]] = []

    async def __aenter__(self) -> FakePipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def set(self, key: str, value: bytes, ex: int) -> None:
        self.sets.append((key, ex))

    async def execute(self) -> None:
        self.redis._check()
        self.redis.data.update(self.sets)
        self.redis.pipelines.append(len(self.sets))


class FakeRecordScript:
    """The ledger's RECORD_SCRIPT: every key of ``keys`` set for ``args[0]`` seconds."""

    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis

    async def __call__(self, keys: list[str], args: list[int]) -> int:
        self.redis._check()
        self.redis.data.update((key, args[0]) for key in keys)
        return len(keys)


def ledger_on(redis: FakeRedis, remember: int = 100) -> ActionLedger:
    ledger = ActionLedger("redis://127.0.0.1:1/0", ttl_days=30, remember=remember)
    ledger._redis = redis  # type: ignore[assignment]
    ledger._mark_sent = redis.register_script(RECORD_SCRIPT)  # type: ignore[assignment]
    return ledger


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_ids_sent_while_redis_is_down_are_recorded_when_it_answers():
    redis = FakeRedis()
    ledger = ledger_on(redis)
    run(ledger.refill())  # learns the server
    redis.up = False

    run(ledger.record(["a-1", "a-2"]))
    assert ledger.pending == 2
    assert run(ledger.refill()) == 0  # still away: they wait

    redis.up = True
    assert run(ledger.refill()) == 2

    assert ledger.pending == 0
    assert set(redis.data) == {KEY_PREFIX + "a-1", KEY_PREFIX + "a-2"}
    assert all(0 < ttl <= 30 * 86_400 for ttl in redis.data.values())


def test_ids_recorded_before_an_empty_restart_are_recorded_again():
    redis = FakeRedis()
    ledger = ledger_on(redis)
    run(ledger.refill())
    run(ledger.record(["b-1", "b-2", "b-3"]))

    redis.restart()
    ledger._next_check = 0.0  # Redis' identity is looked at every CHECK_EVERY seconds
    run(ledger.refill())

    assert set(redis.data) == {KEY_PREFIX + i for i in ("b-1", "b-2", "b-3")}


def test_while_redis_is_away_the_ledger_still_knows_what_it_sent():
    redis = FakeRedis()
    ledger = ledger_on(redis)
    run(ledger.record(["c-1"]))  # recorded
    assert ledger.pending == 0 and KEY_PREFIX + "c-1" in redis.data
    redis.up = False
    run(ledger.record(["c-2"]))  # pending

    unsent = run(ledger.unsent(["c-1", "c-2", "c-3"]))

    assert unsent == {"c-3"}


def test_past_its_bound_the_oldest_pending_ids_are_dropped_and_counted():
    redis = FakeRedis()
    ledger = ledger_on(redis, remember=3)
    redis.up = False
    dropped = metrics.LEDGER_DROPPED._value.get()  # type: ignore[attr-defined]

    run(ledger.record(["d-1", "d-2", "d-3", "d-4", "d-5"]))

    assert ledger.pending == 3
    assert metrics.LEDGER_DROPPED._value.get() - dropped == 2  # type: ignore[attr-defined]
    redis.up = True
    run(ledger.refill())
    assert set(redis.data) == {KEY_PREFIX + i for i in ("d-3", "d-4", "d-5")}


def test_the_pending_gauge_counts_every_ledger():
    redis = FakeRedis()
    first, second = ledger_on(redis), ledger_on(redis)
    redis.up = False
    before = REGISTRY.get_sample_value("crm_ledger_pending_ids")

    run(first.record(["e-1"]))
    run(second.record(["e-2", "e-3"]))

    assert REGISTRY.get_sample_value("crm_ledger_pending_ids") - before == 3


class Unlistable(dict[str, float]):
    """A ledger memory that fails if it is listed whole; asking for one id is fine."""

    def keys(self) -> Any:
        raise AssertionError("the ledger listed every id it remembers")

    def __iter__(self) -> Any:
        raise AssertionError("the ledger listed every id it remembers")


def test_asking_which_ids_are_unsent_looks_up_each_one_not_every_id_remembered():
    """A round asks about its own few actions, and the ledger remembers up to
    ``remember`` ids recorded and as many pending (100,000 each by default). Listing
    them on every round cost 5.7 ms per round at 100,000, growing with the run."""
    redis = FakeRedis()
    ledger = ledger_on(redis, remember=1_000)
    run(ledger.record([f"a-{i}" for i in range(1_000)]))
    redis.up = False
    run(ledger.record(["p-1"]))  # sent while Redis was away: pending
    redis.up = True
    redis.data.clear()  # what the memory alone knows
    ledger._recorded = Unlistable(ledger._recorded)
    ledger._pending = Unlistable(ledger._pending)

    assert run(ledger.unsent(["a-7", "p-1", "new"])) == {"new"}
    redis.up = False  # and with Redis away, the same from memory
    assert run(ledger.unsent(["a-7", "p-1", "new"])) == {"new"}


def test_redis_identity_is_asked_every_few_seconds_when_nothing_waits():
    """The refill runs every second; with nothing pending it asks Redis who it is only
    every CHECK_EVERY seconds, and writes nothing."""
    redis = FakeRedis()
    ledger = ledger_on(redis)
    assert run(ledger.refill()) == 0
    assert redis.identity_asked == 1

    assert run(ledger.refill()) == 0  # a second later: not yet
    assert redis.identity_asked == 1

    ledger._next_check = 0.0  # CHECK_EVERY seconds later
    assert run(ledger.refill()) == 0
    assert redis.identity_asked == 2


def test_ids_recorded_before_the_first_look_at_redis_are_not_written_again():
    """A worker records its first round before the first refill learns the server: that
    is no restart, and nothing is recorded twice."""
    redis = FakeRedis()
    ledger = ledger_on(redis)
    run(ledger.record(["f-1", "f-2"]))
    redis.data.clear()  # would show a second write

    assert run(ledger.refill()) == 0
    assert redis.data == {}


def test_pending_ids_are_written_in_chunks_of_the_refill_size(monkeypatch):
    monkeypatch.setattr(ledger_module, "REFILL_CHUNK", 2)
    redis = FakeRedis()
    ledger = ledger_on(redis)
    run(ledger.refill())
    redis.up = False
    run(ledger.record([f"g-{i}" for i in range(5)]))
    redis.up = True

    assert run(ledger.refill()) == 5
    assert redis.pipelines == [2, 2, 1]


def test_a_refilled_id_keeps_what_is_left_of_its_ttl_and_an_expired_one_is_not_written():
    redis = FakeRedis()
    ledger = ledger_on(redis)  # 30 days
    run(ledger.refill())
    ttl, now = 30 * 86_400, time.time()
    ledger._keep_pending(
        [
            ("ten-days-ago", now - 10 * 86_400),
            ("one-and-a-half-seconds-left", now - ttl + 1.5),
            ("expired-half-a-second-ago", now - ttl - 0.5),
        ]
    )

    assert run(ledger.refill()) == 2
    assert ledger.pending == 0
    assert 20 * 86_400 - 2 <= redis.data[KEY_PREFIX + "ten-days-ago"] <= 20 * 86_400
    assert redis.data[KEY_PREFIX + "one-and-a-half-seconds-left"] == 1
    assert KEY_PREFIX + "expired-half-a-second-ago" not in redis.data


def test_at_its_bound_nothing_is_dropped_and_one_past_it_the_oldest_goes(caplog):
    redis = FakeRedis()
    ledger = ledger_on(redis, remember=3)
    redis.up = False
    with caplog.at_level(logging.WARNING, logger="streams.ledger"):
        run(ledger.record(["h-1", "h-2", "h-3"]))
    assert ledger.pending == 3
    assert not [r for r in caplog.records if "dropped" in r.getMessage()]

    run(ledger.record(["h-4"]))

    assert ledger.pending == 3
    assert run(ledger.unsent(["h-1", "h-2", "h-4"])) == {"h-1"}


def test_past_its_bound_the_oldest_recorded_id_is_forgotten():
    redis = FakeRedis()
    ledger = ledger_on(redis, remember=3)
    run(ledger.record(["i-1", "i-2", "i-3", "i-4"]))
    redis.up = False  # what the memory alone knows

    assert run(ledger.unsent(["i-1", "i-2", "i-4"])) == {"i-1"}


def test_refilling_every_ledger_counts_what_each_wrote():
    redis = FakeRedis()
    first, second = ledger_on(redis), ledger_on(redis)
    run(first.refill())
    run(second.refill())
    redis.up = False
    run(first.record(["j-1"]))
    run(second.record(["j-2", "j-3"]))
    redis.up = True

    assert run(ledger_module.refill_all()) == 3
    assert ledger_module.pending_total() == 0
