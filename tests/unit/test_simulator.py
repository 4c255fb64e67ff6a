"""The event simulator: reproducible, realistic, and valid except where meant not to be."""

from __future__ import annotations

from collections import Counter

from schemas import codec
from schemas.deadletter import DeadLetter, RecordMeta
from schemas.ingress import admit
from streams.tools.simulator import MIXES, PERSONAS, Simulator


def test_same_seed_gives_byte_identical_records():
    first = Simulator(seed=11, customers=50).take(500)
    again = Simulator(seed=11, customers=50).take(500)
    other = Simulator(seed=12, customers=50).take(500)

    assert first == again
    assert first != other


def test_every_record_not_marked_malformed_passes_ingress():
    records = Simulator(seed=3, customers=100, malformed_rate=0.05).take(3000)
    assert len(records) == 3000

    for i, r in enumerate(records):
        outcome = admit(r.family, r.key, r.value, RecordMeta(r.family, 0, i))
        assert isinstance(outcome, DeadLetter) == r.malformed, (r.family, outcome)


def test_malformed_share_is_close_to_the_rate_and_covers_several_error_codes():
    records = Simulator(seed=5, customers=100, malformed_rate=0.05).take(4000)
    bad = [r for r in records if r.malformed]
    codes = Counter(
        admit(r.family, r.key, r.value, RecordMeta(r.family, 0, 0)).error_code  # type: ignore[union-attr]
        for r in bad
    )

    assert 0.03 < len(bad) / len(records) < 0.07
    assert len(codes) >= 5


def test_all_personas_and_families_appear():
    sim = Simulator(seed=1, customers=300, malformed_rate=0.0)
    records = sim.take(6000)
    families = Counter(r.family for r in records)
    types = Counter(codec.loads(r.value)["type"] for r in records)

    assert {c.persona.name for c in sim.customers} == {p.name for p in PERSONAS}
    assert set(families) == {"orders", "browsing", "reviews", "complaints", "customers"}
    for expected in ("order.placed", "order.cancelled", "order.returned", "complaint.opened"):
        assert types[expected] > 0, expected


def test_event_time_starts_at_start_and_only_moves_forward():
    sim = Simulator(seed=2, customers=20, malformed_rate=0.0, retry_rate=0.0)
    times = [codec.loads(r.value)["occurred_at"] for r in sim.take(200)]

    assert times[0] >= "2026-01-01T00:00:00"
    assert times == sorted(times)


def test_the_storefront_mix_is_mostly_views_and_searches_with_orders_running_their_course():
    sim = Simulator(seed=7, customers=500, malformed_rate=0, retry_rate=0, **MIXES["storefront"])
    records = sim.take(60_000)[5_000:]  # past the customers' first profile and consent
    types = Counter(codec.loads(r.value)["type"] for r in records)
    share = {t: n / len(records) for t, n in types.items()}

    assert share["browse.view"] + share["browse.search"] >= 0.8
    assert share["browse.view"] > 3 * share["browse.search"]
    # Orders still run their course (placed, paid, shipped, delivered), and complaints occur
    assert all(types[t] > 0 for t in ("order.paid", "order.shipped", "order.delivered"))
    assert 0 < share.get("complaint.opened", 0) < 0.02
    # Every record passes ingress
    for n, r in enumerate(records[:2_000]):
        event = admit(r.family, r.key, r.value, RecordMeta(r.family, 0, n, None))
        assert not isinstance(event, DeadLetter), event


def test_introduce_gives_every_customer_not_yet_introduced_one_valid_profile_record():
    sim = Simulator(seed=5, customers=300, malformed_rate=0.5, retry_rate=0.5)
    sim.take(50)
    before = {c.customer_id.encode() for c in sim.customers if c.introduced}

    records = list(sim.introduce())

    keys = [r.key for r in records]
    assert len(keys) == len(set(keys)) == 300 - len(before)
    assert set(keys) | before == {c.customer_id.encode() for c in sim.customers}
    for i, r in enumerate(records):
        assert r.family == "customers" and not r.malformed
        assert codec.loads(r.value)["type"] == "customer.profile_upserted"
        assert not isinstance(
            admit(r.family, r.key, r.value, RecordMeta(r.family, 0, i)), DeadLetter
        )
    assert list(sim.introduce()) == []
