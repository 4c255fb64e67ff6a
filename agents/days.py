"""Days, the daily-totals row and the stage and grade names: the vocabulary the
customer state and the customer model (:mod:`agents.model`) share.

Days are UTC calendar days, ``day(t) = floor(t / 86400)``; a row of
``CustomerState.activity.days`` holds one day's totals in the ``D_*`` columns.
"""

from __future__ import annotations

import datetime as dt

DAY = 86_400

# Columns of a row of ``CustomerState.activity.days``.
D_DAY, D_PLACED, D_CANCELLED, D_NET_CENTS, D_RETURNS, D_COMPLAINTS, D_NEG_REVIEWS = range(7)
ROW_WIDTH = 7


def day_of(at: float) -> int:
    return int(at // DAY)


def iso_day(day: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()


class Stage:
    POTENTIAL = "potential"
    NEW = "new"
    ACTIVE = "active"
    DORMANT = "dormant"
    CHURNED = "churned"
    LOYAL = "loyal"
    REACTIVATED = "reactivated"

    ALL = (POTENTIAL, NEW, ACTIVE, DORMANT, CHURNED, LOYAL, REACTIVATED)


class Grade:
    CORE = "core"
    POTENTIAL = "potential"
    ORDINARY = "ordinary"

    ALL = (CORE, POTENTIAL, ORDINARY)
