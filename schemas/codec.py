"""The one module that touches the JSON codec (orjson) and the stored states' packing.

Everything else calls :func:`dumps` / :func:`loads`. The faust tables' codec
(``streams.kafka.TABLE_CODEC``) reads with :func:`loads_stored`: a table value is
plain JSON or a packed form of it.

**Packed forms** (:func:`pack`). A customer's stored state is compact JSON of
1-2 KB, repetitive across customers (field names, event types, rule names) but
too short for a compressor to learn that from the state alone. :func:`pack`
compresses it with a preset dictionary of such parts (``schemas/dictionaries/``,
built by ``python -m bench.state_dictionary``) and puts the packing's number in front:

    byte 0      what follows
    0x01        raw deflate (RFC 1951) with dictionary 1 (4 KB of state parts)
    0x02        one zstd frame (RFC 8878) with dictionary 2 (64 KB, zstd-trained);
                the default (:data:`PACKING`)
    0x00-0x1f   (but JSON's whitespace): reserved for further packings
    any other   plain JSON (states written before packing, clocks, aggregates)

A dictionary is never changed once states are packed with it (a test pins their
digests): a better one is added under the next number, and every one stays
readable. Packing is lossless, so what a state holds (its own ``v`` and any field
a newer release added) comes back byte for byte.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

import orjson
import zstandard

JSONDecodeError = orjson.JSONDecodeError

_OPTIONS = orjson.OPT_NON_STR_KEYS
_RECORD_OPTIONS = _OPTIONS | orjson.OPT_UTC_Z


def dumps(obj: Any) -> bytes:
    """Serialise ``obj`` to compact JSON bytes."""
    return orjson.dumps(obj, option=_OPTIONS)


def dumps_record(fields: dict[str, Any]) -> bytes:
    """:func:`dumps` of a contract's fields as they are (:func:`schemas.base.json_encoder`):
    an enumeration as its value, a date-time in RFC 3339 with ``Z`` for a zero offset, as
    pydantic's JSON mode writes them."""
    return orjson.dumps(fields, option=_RECORD_OPTIONS)


def dumps_str_keys(obj: Any) -> bytes:
    """:func:`dumps` for objects whose dict keys are all strings (a stored customer state):
    ~15 % faster; a key of another type raises ``TypeError``.

    The bytes are copied out of orjson's buffer (about 0.1 us): orjson hands back the
    buffer it wrote into, 4 KB at least and doubled as it fills, never trimmed to the
    length, and a stored form is kept while its round's writes wait (a 1.6 KB form
    held 4.7 KB; ``tests/unit/test_stored_form_memory.py``)."""
    return b"".join((orjson.dumps(obj), b""))


def dumps_sorted(obj: Any) -> bytes:
    """Serialise with sorted keys: stable bytes, for files checked into git."""
    return orjson.dumps(obj, option=_OPTIONS | orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def loads(data: bytes | str) -> Any:
    """Parse JSON; raises :data:`JSONDecodeError` on bad input."""
    return orjson.loads(data)


class PackingError(ValueError):
    """A stored value that does not unpack (cut short or corrupted)."""


class UnknownPacking(PackingError):
    """A stored value that is neither JSON nor packed in a way this release reads."""


def _dictionary(name: str) -> bytes:
    return resources.files("schemas").joinpath(f"dictionaries/{name}").read_bytes()


class _Deflate:
    """Raw deflate with a preset dictionary; levels 1 (fastest) .. 9 (smallest)."""

    levels = range(1, 10)
    _WBITS = -15  # raw deflate: the first byte says what it is, no zlib header needed

    def __init__(self, dictionary: bytes) -> None:
        self.dictionary = dictionary

    def pack(self, data: bytes, level: int) -> bytes:
        deflate = zlib.compressobj(
            level, zlib.DEFLATED, self._WBITS, 8, zlib.Z_DEFAULT_STRATEGY, self.dictionary
        )
        return deflate.compress(data) + deflate.flush()

    def unpack(self, body: bytes) -> bytes:
        inflate = zlib.decompressobj(self._WBITS, self.dictionary)
        try:
            out = inflate.decompress(body) + inflate.flush()
        except zlib.error as exc:
            raise PackingError(
                f"a packed value ({len(body) + 1} bytes) does not unpack: {exc}"
            ) from exc
        if not inflate.eof or inflate.unused_data:
            raise PackingError(
                f"a packed value ({len(body) + 1} bytes) is cut short or has bytes after it"
            )
        return out


class _Zstd:
    """One zstd frame (content size in its header, no checksum: the broker's record
    batches carry CRCs) with a zstd-trained dictionary; levels 1 .. 19. The
    (de)compressors, with the dictionary prepared for each level, are made once per
    thread (they are not thread-safe)."""

    levels = range(1, 20)

    def __init__(self, dictionary: bytes) -> None:
        self.dictionary = dictionary
        self._local = threading.local()

    def _mine(self) -> Any:
        local = self._local
        if not hasattr(local, "compressors"):
            local.compressors = {}
            local.decompressor = zstandard.ZstdDecompressor(
                dict_data=zstandard.ZstdCompressionDict(self.dictionary)
            )
        return local

    def _compressor(self, level: int) -> Any:
        compressors = self._mine().compressors
        compressor = compressors.get(level)
        if compressor is None:
            prepared = zstandard.ZstdCompressionDict(self.dictionary)
            prepared.precompute_compress(level=level)
            compressor = compressors[level] = zstandard.ZstdCompressor(
                level=level, dict_data=prepared, write_checksum=False, write_dict_id=False
            )
        return compressor

    def pack(self, data: bytes, level: int) -> bytes:
        return self._compressor(level).compress(data)

    def pack_all(self, datas: Sequence[bytes], level: int) -> Any:
        """Each of ``datas`` packed as :meth:`pack` packs it (the same bytes), in one call
        into the C library, which lets go of the GIL for the whole batch. None of
        ``datas`` may be empty."""
        return self._compressor(level).multi_compress_to_buffer(datas)

    def unpack(self, body: bytes) -> bytes:
        try:
            size = zstandard.frame_content_size(body)
            if size > MAX_UNPACKED:  # decompress() would allocate what the header says
                raise PackingError(
                    f"a packed value ({len(body) + 1} bytes) says it unpacks to {size:,} "
                    f"bytes, over {MAX_UNPACKED:,}: damaged?"
                )
            return self._mine().decompressor.decompress(body, allow_extra_data=False)
        except zstandard.ZstdError as exc:
            reason = str(exc)
            if "full frame" in reason or "content size" in reason:
                reason = f"cut short ({reason})"
            elif "unused data" in reason:
                reason = f"has bytes after it ({reason})"
            raise PackingError(
                f"a packed value ({len(body) + 1} bytes) does not unpack: {reason}"
            ) from exc


#: The most a zstd-packed value may unpack to (a state is a few KB).
MAX_UNPACKED = 64 << 20

#: Each packing by the number a packed value starts with.
PACKINGS: dict[int, _Deflate | _Zstd] = {
    1: _Deflate(_dictionary("state-1.txt")),
    2: _Zstd(_dictionary("state-2.zstd")),
}
#: Each packing's preset dictionary (pinned by a test: never edited once in use).
DICTIONARIES: dict[int, bytes] = {n: p.dictionary for n, p in PACKINGS.items()}
#: The packing :func:`pack` uses unless told (CRM_STATE_DICTIONARY).
PACKING = 2
#: Its default level (CRM_STATE_PACKING).
LEVEL = 3


def pack(data: bytes, level: int = LEVEL, packing: int = PACKING) -> bytes:
    """``data`` compressed at ``level`` with packing number ``packing``
    (:data:`PACKINGS`), behind its number; ``level`` 0 returns ``data`` unchanged."""
    if not level:
        return data
    _check_level(level, packing)
    return _HEADERS[packing] + PACKINGS[packing].pack(data, level)


def _check_level(level: int, packing: int) -> None:
    packer = PACKINGS[packing]
    if level not in packer.levels:
        raise ValueError(
            f"packing {packing} takes levels {packer.levels.start}..{packer.levels.stop - 1}, "
            f"not {level}"
        )


def pack_many(datas: Sequence[bytes], level: int = LEVEL, packing: int = PACKING) -> list[bytes]:
    """:func:`pack` of each of ``datas``, in order. With zstd, one call into the C library
    packs them all and lets go of the GIL while it does: a thread of its own packs a
    worker's states beside its event loop (:func:`in_one_call`; ``streams.inflight.Packer``)."""
    if not (datas and in_one_call(level, packing) and all(datas)):
        return [pack(data, level, packing) for data in datas]
    _check_level(level, packing)
    header = _HEADERS[packing]
    done = PACKINGS[packing].pack_all(datas, level)  # type: ignore[union-attr]
    return [header + done[i] for i in range(len(done))]


def in_one_call(level: int, packing: int = PACKING) -> bool:
    """Whether :func:`pack_many` packs with one call that lets go of the GIL throughout
    (zstd). Otherwise it calls :func:`pack` per value: on a thread beside a busy one,
    each value would wait for the GIL again (zlib lets go of it per call)."""
    return bool(level) and isinstance(PACKINGS.get(packing), _Zstd)


def unpack(data: bytes) -> bytes:
    """The JSON of a stored value, packed (:func:`pack`) or plain."""
    if not data or data[0] not in _PACKED_STARTS:
        return data
    packer = PACKINGS.get(data[0])
    if packer is None:
        raise UnknownPacking(
            f"a stored value starts with byte 0x{data[0]:02x}: not JSON, and no packing this "
            f"release reads ({', '.join(map(str, PACKINGS))}); was it written by a newer "
            "crmstream?"
        )
    return packer.unpack(data[1:])


def loads_stored(data: bytes) -> Any:
    """A stored table value: :func:`loads` of :func:`unpack`."""
    return orjson.loads(unpack(data))


_HEADERS = {n: bytes([n]) for n in PACKINGS}
#: First bytes that mean "packed": the control characters, which JSON never starts
#: with (bar the whitespace ones). Any other value is JSON, whatever its type.
_PACKED_STARTS = frozenset(range(0x20)) - frozenset(b" \t\n\r")
