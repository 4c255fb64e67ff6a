"""Per-type dispatch (:func:`schemas.registry.kinds`) answers what ``isinstance`` answers,
for every event class ingress produces; and the fold's identity checks
(``type(event) is OrderPlaced``) are sound because no event class subclasses another."""

from __future__ import annotations

import itertools

import pytest

from agents import customer_events, journal, seen, state
from schemas import browsing, orders, outcomes
from schemas.registry import EVENT_CLASSES, kinds

#: Every class or tuple the fold dispatches on by a kinds() set.
DISPATCHED = {
    "MODEL_INPUTS": customer_events.MODEL_INPUTS,
    "COMPLAINT_EVENTS": customer_events.COMPLAINT_EVENTS,
    "FLAG_INPUTS": customer_events.FLAG_INPUTS,
    "ATTRIBUTED": customer_events.ATTRIBUTED,
    "GRADE_ONLY_INPUTS": customer_events.GRADE_ONLY_INPUTS,
    "OUTCOME_EVENTS": outcomes.OUTCOME_EVENTS,
    "journal._LEFT_OUT": journal._LEFT_OUT,
    "seen.ONCE_PER_ORDER": seen.ONCE_PER_ORDER,
    "orders._OrderEvent": orders._OrderEvent,
    "browsing.ItemView | CartAdd": (browsing.ItemView, browsing.CartAdd),
}


def test_every_input_family_has_its_classes_listed():
    names = {c.__name__ for c in EVENT_CLASSES}
    assert {"OrderPlaced", "ItemView", "ComplaintOpened", "CareRequested", "OutcomeOpened"} <= names
    assert len(EVENT_CLASSES) == len(set(EVENT_CLASSES))


@pytest.mark.parametrize("name", sorted(DISPATCHED))
def test_membership_of_the_exact_type_answers_isinstance(name):
    wanted = DISPATCHED[name]
    kinds_of = kinds(wanted)
    for cls in EVENT_CLASSES:
        event = cls.model_construct()
        assert (type(event) in kinds_of) == isinstance(event, wanted), cls.__name__


def test_no_event_class_subclasses_another_so_identity_is_isinstance():
    for a, b in itertools.permutations(EVENT_CLASSES, 2):
        assert not issubclass(a, b), f"{a.__name__} subclasses {b.__name__}"


def test_interactions_are_browsing_reviews_and_complaints_and_nothing_else():
    # Spelled out, not derived as agents.state derives it: what state.apply counted as
    # an interaction before per-type dispatch (every event but orders, profile and
    # consent changes, erasure, flag reviews, care requests and messaging outcomes).
    assert {c.__name__ for c in state._INTERACTIONS} == {
        "ItemView",
        "Search",
        "CartAdd",
        "Favorite",
        "ReviewPosted",
        "ComplaintOpened",
        "ComplaintAcknowledged",
        "ComplaintUpdated",
        "ComplaintResolved",
        "ComplaintReopened",
        "ComplaintClosed",
    }
