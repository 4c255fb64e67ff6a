"""The one module that touches the JSON codec (orjson) and the stored states' packing.

Everything else calls :func:`dumps` / :func:`loads`. The faust tables' codec
(``streams.kafka.TABLE_CODEC``) reads with :func:`loads_stored`: a table value is
plain JSON or a packed form of it.

**Packed forms** (:func:`pack`). A customer's stored state is compact JSON of
1-2 KB, repetitive across customers (field names, event types, rule names) but
too short for deflate to learn that from the state alone. :func:`pack` deflates
it with a preset dictionary of such parts (``schemas/dictionaries/``, built by
``python -m bench.state_dictionary``) and puts the dictionary's number in front:

    byte 0      what follows
    0x01        raw deflate (RFC 1951) with dictionary 1 of :data:`DICTIONARIES`
    0x00-0x1f   (but JSON's whitespace): reserved for further dictionaries
    any other   plain JSON (states written before packing, clocks, aggregates)

A dictionary is never changed once states are packed with it (a test pins their
digests): a better one is added under the next number, and every one stays
readable. Packing is lossless, so what a state holds (its own ``v`` and any field
a newer release added) comes back byte for byte.
"""

from __future__ import annotations

import zlib
from importlib import resources
from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError

_OPTIONS = orjson.OPT_NON_STR_KEYS


def dumps(obj: Any) -> bytes:
    """Serialise ``obj`` to compact JSON bytes."""
    return orjson.dumps(obj, option=_OPTIONS)


def dumps_str_keys(obj: Any) -> bytes:
    """:func:`dumps` for objects whose dict keys are all strings (a stored customer state):
    ~15 % faster; a key of another type raises ``TypeError``."""
    return orjson.dumps(obj)


def dumps_sorted(obj: Any) -> bytes:
    """Serialise with sorted keys: stable bytes, for files checked into git."""
    return orjson.dumps(obj, option=_OPTIONS | orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def loads(data: bytes | str) -> Any:
    """Parse JSON; raises :data:`JSONDecodeError` on bad input."""
    return orjson.loads(data)


#: Preset dictionaries by the number a packed value starts with.
DICTIONARIES: dict[int, bytes] = {
    1: resources.files("schemas").joinpath("dictionaries/state-1.txt").read_bytes(),
}
#: The dictionary :func:`pack` uses.
PACKING = 1
_WBITS = -15  # raw deflate: the first byte says what it is, no zlib header needed


class PackingError(ValueError):
    """A stored value that does not unpack (cut short or corrupted)."""


class UnknownPacking(PackingError):
    """A stored value that is neither JSON nor packed with a dictionary this release has."""


def pack(data: bytes, level: int = 1) -> bytes:
    """``data`` deflated at ``level`` (1 fastest .. 9 smallest) with dictionary
    :data:`PACKING`, behind its number; ``level`` 0 returns ``data`` unchanged."""
    if not level:
        return data
    deflate = zlib.compressobj(
        level, zlib.DEFLATED, _WBITS, 8, zlib.Z_DEFAULT_STRATEGY, DICTIONARIES[PACKING]
    )
    return _HEADERS[PACKING] + deflate.compress(data) + deflate.flush()


def unpack(data: bytes) -> bytes:
    """The JSON of a stored value, packed (:func:`pack`) or plain."""
    if not data or data[0] not in _PACKED_STARTS:
        return data
    dictionary = DICTIONARIES.get(data[0])
    if dictionary is None:
        raise UnknownPacking(
            f"a stored value starts with byte 0x{data[0]:02x}: not JSON, and no packing this "
            f"release reads ({', '.join(map(str, DICTIONARIES))}); was it written by a newer "
            "crmstream?"
        )
    inflate = zlib.decompressobj(_WBITS, dictionary)
    try:
        out = inflate.decompress(data[1:]) + inflate.flush()
    except zlib.error as exc:
        raise PackingError(f"a packed value ({len(data)} bytes) does not unpack: {exc}") from exc
    if not inflate.eof or inflate.unused_data:
        raise PackingError(f"a packed value ({len(data)} bytes) is cut short or has bytes after it")
    return out


def loads_stored(data: bytes) -> Any:
    """A stored table value: :func:`loads` of :func:`unpack`."""
    return orjson.loads(unpack(data))


_HEADERS = {n: bytes([n]) for n in DICTIONARIES}
#: First bytes that mean "packed": the control characters, which JSON never starts
#: with (bar the whitespace ones). Any other value is JSON, whatever its type.
_PACKED_STARTS = frozenset(range(0x20)) - frozenset(b" \t\n\r")
