"""What a state remembers of the events it applied (``agents.seen``), held to a plain model.

The remembered events are one ``bytes`` value of 12-byte records (uint32 seconds, big
endian; 8-byte digest), sorted by time. Every applied event adds one (``add``: after
those of its second, so equal times keep their order) and forgets those dated before
the horizon (``forget_before``). Both run once per event. Here both are held to a list
of (seconds, digest) pairs, on random histories with equal times, out-of-order events,
times outside uint32 and horizons before, inside and after the records.
Unit tier.
"""

from __future__ import annotations

import bisect
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from agents import seen

Pairs = list[tuple[int, bytes]]


def _pairs(blob: bytes) -> Pairs:
    return [(t, d) for t, d in seen.RECORD.iter_unpack(blob)]


def _add(pairs: Pairs, at: float, digest: bytes) -> Pairs:
    seconds = min(max(int(at), 0), 0xFFFFFFFF)
    i = bisect.bisect_right([t for t, _ in pairs], seconds)
    return [*pairs[:i], (seconds, digest), *pairs[i:]]


def _forget(pairs: Pairs, horizon: float) -> Pairs:
    return [(t, d) for t, d in pairs if t >= horizon]


TIMES = st.one_of(
    st.integers(1_700_000_000, 1_700_000_040).map(float),
    st.floats(1_700_000_000, 1_700_000_040, allow_nan=False),
    st.sampled_from([-5.0, 0.0, 0.5, float(0xFFFFFFFF), 2.0**33]),
)
HORIZONS = st.one_of(
    st.integers(1_699_999_990, 1_700_000_050).map(float),
    st.floats(1_699_999_990, 1_700_000_050, allow_nan=False),
    st.sampled_from([-math.inf, -1.0, 0.0, 0.5, 1.0, float(0xFFFFFFFF), 2.0**33, math.inf]),
)
DIGESTS = st.binary(min_size=8, max_size=8)


@settings(max_examples=300, deadline=None, database=None)
@given(steps=st.lists(st.tuples(TIMES, DIGESTS, st.one_of(st.none(), HORIZONS)), max_size=60))
def test_add_and_forget_keep_what_a_sorted_list_keeps(
    steps: list[tuple[float, bytes, float | None]],
) -> None:
    blob = b""
    model: Pairs = []
    for at, digest, horizon in steps:
        blob = seen.add(blob, at, digest)
        model = _add(model, at, digest)
        assert _pairs(blob) == model
        if horizon is not None:
            blob = seen.forget_before(blob, horizon)
            model = _forget(model, horizon)
            assert _pairs(blob) == model
    assert seen.count(blob) == len(model)


def test_forget_before_a_horizon_past_every_record_forgets_them_all() -> None:
    blob = b"".join(seen.RECORD.pack(t, b"d" * 8) for t in (10, 20, 30))
    assert seen.forget_before(blob, 31) == b""
    assert seen.forget_before(blob, 30.5) == b""
    assert _pairs(seen.forget_before(blob, 30)) == [(30, b"d" * 8)]
    assert seen.forget_before(blob, 10) == blob


def test_forget_before_finds_the_first_kept_past_the_first_few() -> None:
    """Past the few it steps over one by one (a customer back after a quiet week), it
    bisects; equal times on either side of the horizon stay together."""
    times = [10, 10, 11, 12, 12, 12, 13, 14, 15, 16, 17, 17, 18, 19, 20, 20, 21, 22, 23, 30]
    blob = b"".join(seen.RECORD.pack(t, bytes([n]) * 8) for n, t in enumerate(times))
    for horizon in (9.5, 10, 10.5, 12, 13.5, 17, 17.2, 20, 22.9, 23, 29.99, 30, 30.01):
        assert _pairs(seen.forget_before(blob, horizon)) == _forget(_pairs(blob), horizon)
