"""Deterministic ids: :func:`schemas.base.uuid5_text` gives exactly what ``uuid.uuid5``
gives, so no id of a record already sent changes (a replay must repeat every id)."""

from __future__ import annotations

import random
import string
import uuid

from schemas.actions import ACTION_NAMESPACE, action_id_for
from schemas.base import uuid5_text

#: An action id as the code before uuid5_text computed it (uuid.uuid5): pinned.
PINNED = "33d8c682-9f88-5493-b377-bd6b49f804d7"


def test_uuid5_text_is_uuid5_for_any_name():
    rng = random.Random(7)
    alphabet = string.printable + "éß漢字\x1f\x00"
    names = ["", "a", "\x1f\x1f"] + [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80))) for _ in range(5000)
    ]
    for namespace in (ACTION_NAMESPACE, uuid.NAMESPACE_DNS, uuid.UUID(int=0)):
        for name in names:
            assert uuid5_text(namespace, name) == str(uuid.uuid5(namespace, name)), name


def test_an_action_id_is_what_it_was():
    action_id = action_id_for("care.follow_up", "cust-0001", "order-1")

    assert action_id == PINNED
    parsed = uuid.UUID(action_id)
    assert parsed.version == 5 and parsed.variant == uuid.RFC_4122
