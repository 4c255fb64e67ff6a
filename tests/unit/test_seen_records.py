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

import pytest
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


@settings(max_examples=200, deadline=None, database=None)
@given(
    records=st.lists(st.tuples(st.integers(0, 0xFFFFFFFF), DIGESTS), max_size=20),
    other=DIGESTS,
)
def test_contains_finds_exactly_the_digests_remembered(
    records: list[tuple[int, bytes]], other: bytes
) -> None:
    blob = b"".join(seen.RECORD.pack(t, d) for t, d in sorted(records))
    for _, digest in records:
        assert seen.contains(blob, digest)
    assert seen.contains(blob, other) == (other in [d for _, d in records])


def test_contains_does_not_take_bytes_straddling_two_records_for_a_digest() -> None:
    # Given two records, and a digest made of the end of the first's digest and the
    # second's time (it is in the bytes, but not as a digest)
    first, second = seen.RECORD.pack(1, b"abcdefgh"), seen.RECORD.pack(2, b"ijklmnop")
    straddling = first[8:] + second[:4]
    blob = first + second

    assert straddling in blob
    assert not seen.contains(blob, straddling)
    # and once it is remembered as a digest too, after the straddling bytes, it is found
    assert seen.contains(seen.add(blob, 3, straddling), straddling)
    # even one byte after them: time 256 ends in a zero byte, before eight more
    zeros = b"\0" * 8
    late = seen.RECORD.pack(1, b"abcdefgh") + seen.RECORD.pack(256, zeros)
    assert late.find(zeros, 4) == 15  # straddling the time and the digest
    assert seen.contains(late, zeros)


def test_a_stored_form_is_whole_records_of_strict_base64() -> None:
    blob = seen.RECORD.pack(1, b"abcdefgh")

    assert seen.decode(seen.encode(blob)) == blob
    with pytest.raises(ValueError, match="whole number of records"):
        seen.decode(seen.encode(blob + b"x"))
    text = seen.encode(blob)
    with pytest.raises(ValueError):  # not skipped over: a stored form is never patched up
        seen.decode(text[:8] + "!" + text[8:])
