"""A stored form holds the memory of its bytes, not the encoder's buffer.

orjson returns its output in the buffer it wrote it into (4 KB at least, doubled
as it fills) with the length set, never trimmed: a 1.6 KB stored form held 4.7 KB
of heap. A round's stored forms wait in memory until its writes are acknowledged
(``CustomerAgent.unwritten``, ``HeldWrites``), and with ``CRM_STATE_PACKING=0`` the
memory store keeps them as the customers' table values.

Unit tier: the product's fold and its stored forms, measured with tracemalloc.
"""

from __future__ import annotations

import tracemalloc

from agents.customer_events import fold_batch, stored_forms
from agents.rules import Rules
from bench.fold import records
from schemas import codec

#: A bytes object's header (33 bytes) and its entry in the dict of forms, with room.
PER_FORM = 128


def test_a_rounds_stored_forms_hold_their_bytes_and_no_more() -> None:
    # Given a storefront batch folded in-process
    rules = Rules()
    result = fold_batch(records(20_000, 2_000, 5, "storefront"), {}.get, rules, now=0.0)
    # When its stored forms are made, as a round makes them before its writes wait
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        forms = stored_forms(result, {}.get, rules)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # Then they hold their bytes, each with a header: not orjson's buffers
    length = sum(len(form) for form in forms.values())
    assert len(forms) > 1_000
    assert held <= length + PER_FORM * len(forms), (
        f"{held / len(forms):,.0f} bytes held per form of {length / len(forms):,.0f}"
    )


def test_the_trimmed_form_is_the_encoders_output() -> None:
    state = {"v": 3, "customer_id": "c-1", "timers": [[1.5, "care.birthday", "", "e-1", {}]]}
    assert codec.dumps_str_keys(state) == codec.dumps(state)
    assert codec.loads(codec.dumps_str_keys(state)) == state
