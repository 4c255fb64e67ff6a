"""Build a preset dictionary for packed customer states (``schemas/dictionaries``).

    python -m bench.state_dictionary [--format zstd|deflate] [--size N] [--out FILE]

A stored customer state is compact JSON of 1-2 KB, too short for a compressor to
learn its field names, event types and category words from the state itself. A
preset dictionary gives it them up front (:func:`schemas.codec.pack`). This tool
folds simulated histories (both simulator mixes, no broker) into stored states, then:

- ``zstd`` (the packing in use, dictionary 2; default size 65,536): zstd's own
  trainer (COVER, with its parameters fixed, so the same states give the same bytes);
- ``deflate`` (dictionary 1; default size 4,096): cuts the states into their
  top-level parts (``"journal":[...]`` and so on) and adds parts greedily, each step
  the part that most shrinks a held-out set of other customers' states.

Progress goes to stderr.

A dictionary in use is never changed: a stored state names the dictionary it was
packed with by its first byte, and :mod:`schemas.codec` keeps every one it can
read. A better dictionary is added under the next number.
"""

from __future__ import annotations

import argparse
import random
import sys
import zlib

from schemas import codec
from streams.tools.runner import say


def stored_states(seed: int, customers: int, events: int) -> list[bytes]:
    """The stored forms of every customer after ``events`` simulated events of each mix."""
    from bench.state_size import fold_history
    from streams.tools.simulator import MIXES

    out: list[bytes] = []
    for mix in sorted(MIXES):
        table = fold_history(mix, seed, customers, events)
        out += [s.to_bytes() for _, s in sorted(table.items())]
    return out


def parts(state: bytes) -> list[bytes]:
    """A stored state's top-level ``"name":value`` fragments."""
    return [codec.dumps({k: v})[1:-1] for k, v in codec.loads(state).items()]


def packed_size(dictionary: bytes, states: list[bytes]) -> int:
    total = 0
    for state in states:
        c = zlib.compressobj(1, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, dictionary)
        total += len(c.compress(state) + c.flush())
    return total


def build(states: list[bytes], size: int, seed: int, progress: bool = True) -> bytes:
    """Greedy: the part that most shrinks the held-out states, added last (deflate
    reaches the end of the dictionary with the shortest distances), until ``size``."""
    rng = random.Random(seed)
    rng.shuffle(states)
    held_out, pool = states[:150], states[150:300]
    candidates = sorted({p for s in pool for p in parts(s) if 8 <= len(p) <= 600})
    dictionary = b""
    best_total = packed_size(dictionary, held_out)
    plain = sum(map(len, held_out))
    while candidates:
        scored = []
        for c in candidates:
            if len(dictionary) + len(c) > size:
                continue
            scored.append((packed_size(dictionary + c, held_out), c))
        if not scored:
            break
        total, best = min(scored)
        if total >= best_total:
            break
        dictionary, best_total = dictionary + best, total
        candidates.remove(best)
        if progress:
            say(
                f"bench: state dictionary: {len(dictionary):>5,} bytes; held-out states "
                f"{plain / len(held_out):,.0f} -> {total / len(held_out):,.0f} bytes"
            )
    return dictionary


#: zstd's COVER parameters: segment size k and d-mers, as its optimiser chose them on
#: the default states (fixed, so a rebuild is byte for byte the same).
ZSTD_COVER = {"k": 1998, "d": 8}
#: The zstd level the dictionary's statistics are tuned for (CRM_STATE_PACKING's default).
ZSTD_LEVEL = 3


def build_zstd(states: list[bytes], size: int) -> bytes:
    """A zstd dictionary of ``size`` bytes trained on ``states``."""
    import zstandard

    trained = zstandard.train_dictionary(size, states, level=ZSTD_LEVEL, **ZSTD_COVER)
    return trained.as_bytes()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.state_dictionary",
        description=__doc__.split("\n\n")[2] if __doc__ else None,
    )
    parser.add_argument(
        "--format",
        choices=("zstd", "deflate"),
        default="zstd",
        help="zstd (dictionary 2, the packing in use; default) or deflate (dictionary 1)",
    )
    parser.add_argument("--size", type=int, help="dictionary bytes (zstd 65536, deflate 4096)")
    parser.add_argument("--seed", type=int, default=11, help="simulator seed (11)")
    parser.add_argument("--customers", type=int, default=3000, help="per mix (3000)")
    parser.add_argument("--events", type=int, default=30_000, help="per mix (30000)")
    parser.add_argument("--out", help="write the dictionary here (default: stdout)")
    args = parser.parse_args(argv)
    say(f"bench: state dictionary: folding {args.events:,} events of each mix")
    states = stored_states(args.seed, args.customers, args.events)
    if args.format == "zstd":
        dictionary = build_zstd(states, args.size or 65_536)
    else:
        dictionary = build(states, args.size or 4096, args.seed)
    if args.out:
        with open(args.out, "wb") as f:
            f.write(dictionary)
        say(f"bench: state dictionary: {len(dictionary):,} bytes written to {args.out}")
    else:
        sys.stdout.buffer.write(dictionary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
