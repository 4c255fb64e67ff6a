"""A round's states are packed for the changelog on a thread beside the event loop.

The finding (twenty-seventh session, py-spy on ``bench.throughput``): zstd packing of
the states a round writes took ~3 % of the worker's samples, all of it on the event
loop's thread, one ``compress`` per state (~8.5 µs each for a storefront state), while
the VM's second core had room. zstd packs a batch in one call that lets go of the GIL
(``multi_compress_to_buffer``), so :class:`streams.inflight.Packer` hands a batch to a
thread of its own. The bytes stored must not change: they are what a restart reads.
"""

from __future__ import annotations

import asyncio
import threading

import orjson
import pytest

from schemas import codec
from streams import inflight
from streams.inflight import PACK_OFF_LOOP_FROM, Packer


def _forms(n: int) -> list[bytes]:
    return [
        orjson.dumps(
            {"v": 3, "customer_id": f"c-{i:06d}", "activity": [i, i * 0.5, "views", [1, 2, i]]}
        )
        for i in range(n)
    ]


@pytest.mark.parametrize(
    ("level", "packing"), [(0, 2), (1, 2), (3, 2), (19, 2), (0, 1), (1, 1), (6, 1)]
)
def test_pack_many_stores_what_pack_stores(level: int, packing: int) -> None:
    forms = _forms(300)
    assert codec.pack_many(forms, level, packing) == [codec.pack(f, level, packing) for f in forms]


def test_pack_many_of_nothing_and_of_an_empty_value() -> None:
    assert codec.pack_many([], 3, 2) == []
    forms = [b'{"a":1}', b"", b'{"b":2}']  # zstd's batch call refuses an empty value
    assert codec.pack_many(forms, 3, 2) == [codec.pack(f, 3, 2) for f in forms]


def test_pack_many_refuses_a_level_its_packing_lacks() -> None:
    with pytest.raises(ValueError, match=r"levels 1\.\.19"):
        codec.pack_many(_forms(3), 20, 2)


def test_only_zstd_packs_in_one_call() -> None:
    assert codec.in_one_call(3, 2)
    assert not codec.in_one_call(0, 2)  # nothing to pack
    assert not codec.in_one_call(6, 1)  # zlib: one call (and one GIL hop) per value


def _threads_of_pack_many(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    seen: list[int] = []
    real = codec.pack_many

    def observed(*args: object) -> list[bytes]:
        seen.append(threading.get_ident())
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(inflight.codec, "pack_many", observed)
    return seen


def test_a_batch_of_states_packs_beside_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _threads_of_pack_many(monkeypatch)
    forms = _forms(PACK_OFF_LOOP_FROM)

    async def pack() -> tuple[list[bytes], int]:
        return await Packer().pack(forms, 3, 2), threading.get_ident()

    packed, loop_thread = asyncio.run(pack())
    assert packed == [codec.pack(f, 3, 2) for f in forms]
    assert len(seen) == 1 and seen[0] != loop_thread


@pytest.mark.parametrize(
    ("n", "level", "packing"),
    [(PACK_OFF_LOOP_FROM - 1, 3, 2), (PACK_OFF_LOOP_FROM, 6, 1), (PACK_OFF_LOOP_FROM, 0, 2)],
)
def test_a_few_states_or_a_packing_that_holds_the_gil_pack_on_the_loop(
    monkeypatch: pytest.MonkeyPatch, n: int, level: int, packing: int
) -> None:
    seen = _threads_of_pack_many(monkeypatch)
    forms = _forms(n)

    async def pack() -> tuple[list[bytes], int]:
        return await Packer().pack(forms, level, packing), threading.get_ident()

    packed, loop_thread = asyncio.run(pack())
    assert packed == [codec.pack(f, level, packing) for f in forms]
    assert seen == [loop_thread]
