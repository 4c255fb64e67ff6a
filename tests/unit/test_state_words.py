"""A state read from its bytes shares its words with every other state read so.

orjson makes a new string object for every value it reads, so each parsed state held
its own copy of every channel, action type, verdict, reason code, rule id, timer kind,
group and event type it repeats: about 1.6 KB of a parsed state's 8.6 on the
storefront mix. A worker keeps thousands of states parsed (``streams.parsed``) and a
round holds the states it read from bytes until they are written.

Unit tier: the product's fold, its stored forms and ``CustomerState.from_bytes``;
memory measured with tracemalloc.
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import pytest

import agents.state as state_module
from agents.customer_events import fold_batch
from agents.journal import E_TYPE, O_CHANNEL, O_CODE, O_RULE, O_TYPE, O_VERDICT
from agents.outcomes import A_CHANNEL, A_GROUP, A_TYPE
from agents.policy import H_CHANNEL, H_PRIORITY, H_TYPE
from agents.rules import Rules
from agents.state import CustomerState
from agents.timers import T_KIND
from bench.fold import records
from schemas import codec


@pytest.fixture(scope="module")
def forms() -> list[bytes]:
    """Stored forms of 2,000 storefront customers after 20,000 events, packed as the
    worker packs them."""
    result = fold_batch(records(20_000, 2_000, 5, "storefront"), {}.get, Rules(), now=0.0)
    return [codec.pack(state.to_bytes()) for _, state in result.states.values()]


@pytest.fixture()
def fresh_words(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    words: dict[str, str] = {}
    monkeypatch.setattr(state_module, "_WORDS", words)
    return words


def _words(state: CustomerState) -> list[Any]:
    """Every value in a place that holds a word."""
    a = state.assessment
    found: list[Any] = [a.stage, a.rfm_group, a.grade, state.profile.timezone]
    found += state.profile.preferred_channels
    found += [row[1] for row in state.contact.recent_actions]
    found += [row[i] for row in state.contact.contacts for i in (H_CHANNEL, H_PRIORITY, H_TYPE)]
    found += [row[T_KIND] for row in state.timers]
    found += [
        row[i]
        for row in state.journal.outcomes
        for i in (O_TYPE, O_VERDICT, O_CHANNEL, O_CODE, O_RULE)
    ]
    found += [row[E_TYPE] for row in state.journal.events]
    if state.outcomes is not None:
        found += [row[i] for row in state.outcomes.actions for i in (A_TYPE, A_CHANNEL, A_GROUP)]
    return [value for value in found if isinstance(value, str)]


def test_states_read_from_their_bytes_hold_one_string_object_per_word(
    forms: list[bytes], fresh_words: dict[str, str]
) -> None:
    # When the stored forms are read back, as a worker reads the states of a round
    states = [CustomerState.from_bytes(form) for form in forms]
    words = [value for state in states for value in _words(state)]
    # Then each word is one object, whichever state holds it
    assert len(words) > 10 * len(states)
    assert len({id(value) for value in words}) == len(set(words))


#: Bytes of heap per parsed state of this fold: 6,089 with a string per word read,
#: 5,173 with the words shared (Python 3.11).
LIMIT = 5_600


def test_a_parsed_state_holds_less_memory(forms: list[bytes], fresh_words: dict[str, str]) -> None:
    CustomerState.from_bytes(forms[0])  # the modules' own first-use allocations
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        states = [CustomerState.from_bytes(form) for form in forms]
        held = (tracemalloc.get_traced_memory()[0] - before) / len(states)
    finally:
        tracemalloc.stop()
    assert held < LIMIT, f"{held:,.0f} B per parsed state"


def test_words_do_not_change_what_a_state_reads_or_writes(
    forms: list[bytes], fresh_words: dict[str, str]
) -> None:
    assert len(forms) > 1_000
    for form in forms:
        state = CustomerState.from_bytes(form)
        assert codec.loads(state.to_bytes()) == codec.loads_stored(form)


def test_the_table_of_words_is_bounded(fresh_words: dict[str, str]) -> None:
    # Given stored states whose timers are each of a kind no other state has
    def stored(n: int) -> bytes:
        state = CustomerState(f"c-{n}")
        state.timers = [[1.0e9 + n, f"kind.{n}", "", "e-1", {}]]
        return state.to_bytes()

    # When more of them are read than the table keeps words
    for n in range(state_module.WORDS_KEPT * 2):
        CustomerState.from_bytes(stored(n))
    # Then the table stops taking new words at its bound (one state's words over it at most)
    assert state_module.WORDS_KEPT <= len(fresh_words) <= state_module.WORDS_KEPT + 8
    # And a word it holds is still shared
    kind = "kind.1"
    assert CustomerState.from_bytes(stored(1)).timers[0][T_KIND] is fresh_words[kind]


def test_a_row_of_another_shape_reads_as_before(fresh_words: dict[str, str]) -> None:
    # Given stored states with rows of other shapes: a timer row cut short, one whose kind
    # is not a string, journal events that are an object and a string, not arrays, and a
    # recent action (the first row visited) that is an object
    state = CustomerState("c-1")
    state.timers = [[1.0e9, "care.birthday", "", "e-1", {}], [2.0e9], [3.0e9, ["x"], "", "e", {}]]
    state.journal.events = [{"at": 1.0e9}, "order.paid", [1.0e9, "order.paid", "o-1"]]
    other = CustomerState("c-2")
    other.contact.recent_actions = [{"action_id": "a-1"}, ["a-2", "welcome", 1.0e9]]
    for data in (state.to_bytes(), other.to_bytes()):
        # When each is read back, it reads as its stored form says
        assert codec.loads(CustomerState.from_bytes(data).to_bytes()) == codec.loads(data)


def test_a_number_where_a_word_belongs_keeps_its_type(fresh_words: dict[str, str]) -> None:
    # Given two stored states whose timers' kinds are equal numbers of two types (1 and
    # true: equal in Python, with one hash)
    first, second = CustomerState("c-1"), CustomerState("c-2")
    first.timers = [[1.0e9, 1, "", "e-1", {}]]
    second.timers = [[1.0e9, True, "", "e-2", {}]]
    # When both are read back, in that order
    CustomerState.from_bytes(first.to_bytes())
    read = CustomerState.from_bytes(second.to_bytes())
    # Then the second holds its own value, not the first's
    assert read.timers[0][T_KIND] is True
    assert read.to_bytes() == second.to_bytes()
