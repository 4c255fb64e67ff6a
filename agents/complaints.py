"""Complaint lifecycle and SLA deadlines (domain.md §5), as pure functions.

Consumes: ``crm.complaints`` events (:mod:`schemas.complaints`) and the
complaint timers that fell due. Owns: ``CustomerState.complaints`` (complaint
id -> a flat record, see :data:`RECORD_FIELDS`) and the complaint rows of
``CustomerState.timers`` (kinds :data:`COMPLAINT_TIMER_KINDS`, key = complaint
id). Emits: escalation actions for service staff and satisfaction follow-ups,
plus the SLA facts (met, breached, opened) the caller turns into metrics.
No I/O, no wall clock: every time is an argument. Rules and defaults:
``docs/complaints.md``; configuration: :class:`agents.rules.ComplaintRules`.

Deadlines (each a durable timer, set when its start is known):

- **first response** (:data:`FIRST_RESPONSE`): ``first_response.hours`` after
  opening (``fast_hours`` for ``fast_channels``, i.e. social media). The first
  acknowledgment, resolution or closing *strictly before* the due time meets it
  and cancels the timer; one at or after the due time does not -- the timer
  stays and fires as a breach.
- **solution** (:data:`SOLUTION`), complex complaints only: the same local time
  ``solution.working_days`` working days after opening (or after the latest
  reopening), in the working-day calendar. Resolution or closing before it meets
  it. A type/severity update re-decides whether the complaint is complex.
- **satisfaction follow-up** (:data:`FOLLOW_UP`): ``follow_up.after_hours``
  after the resolution; firing sends the follow-up (met) unless the firing is
  already past the follow-up's expiry (breach, nothing sent). A reopening, or a
  closing that says whether the customer is satisfied, cancels it.

A breach (a first-response or solution timer firing) emits exactly one
escalation; so does each reopening and a closing with ``satisfied=false``.
Action ids are ``action_id_for(rule, customer, "<complaint>:<kind>:<reopens>")``.

Out-of-order and unknown complaints:

- An event for an unknown complaint id (say, an acknowledgment before the
  opening) creates its record with type, channel, severity and opening time
  unknown; the event then applies as usual. No first-response or solution
  deadline can start until the ``complaint.opened`` event arrives; when it does,
  its fields are filled in and the deadlines are set from its time (met at once
  if the recorded response came in time, else the overdue timer fires a breach).
- An event older than the complaint's latest applied event only fills in a
  milestone time not yet known (first response, resolution); it changes neither
  the state nor the timers, and emits nothing. Exception: a resolution of a
  complaint not yet resolved in its current round applies as usual.
- A second ``complaint.opened`` for a known, opened complaint, a second
  resolution, reopening or closing in a row are repeats: ignored.

Bounds: at most ``complaints.max_open`` open complaints (opened, acknowledged,
updated, reopened) are tracked; a complaint opened past that is counted in
``ComplaintOutcome.opened`` and ``untracked`` but gets no record, timer or
action (a customer with that many open cases is already in front of staff; it
keeps one customer from growing the state without bound). Resolved and closed
complaints are kept up to ``complaints.keep_settled`` (the oldest closed ones
go first, then the oldest resolved, with their timers). A reopening of a kept
complaint is always tracked, so open records stay below ``max_open +
keep_settled``; each complaint has at most three timers.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from agents import timers
from agents.rules import ComplaintRules, Rules, WorkCalendar
from agents.state import CustomerState
from agents.timers import Timer
from schemas import complaints as cs
from schemas.actions import Action, ActionType, ClockMode, Priority, action_id_for
from schemas.base import Channel

#: Timer kinds (key = complaint id).
FIRST_RESPONSE = "complaint.first_response"
SOLUTION = "complaint.solution"
FOLLOW_UP = "complaint.follow_up"
COMPLAINT_TIMER_KINDS = frozenset({FIRST_RESPONSE, SOLUTION, FOLLOW_UP})

#: Deadline names: the ``deadline`` label of the SLA metrics, the ``deadline_kind`` param.
D_FIRST_RESPONSE = "first_response"
D_SOLUTION = "solution"
D_FOLLOW_UP = "follow_up"
#: Escalations that are not deadlines (``deadline_kind`` param only).
K_REOPENED = "reopened"
K_UNSATISFIED = "unsatisfied"

#: Rule ids (the action's ``rule_id`` and the root of its id), by kind.
RULE_IDS = {
    D_FIRST_RESPONSE: "complaint.first_response",
    D_SOLUTION: "complaint.solution",
    D_FOLLOW_UP: "complaint.satisfaction_follow_up",
    K_REOPENED: "complaint.reopened",
    K_UNSATISFIED: "complaint.unsatisfied",
}

#: Type label of a complaint whose ``complaint.opened`` has not been seen.
UNKNOWN_TYPE = "unknown"

OPEN_STATES = frozenset({"opened", "acknowledged", "updated", "reopened"})
SETTLED_STATES = frozenset({"resolved", "closed"})
#: Open and never resolved in this round: a late resolution still applies.
_BEFORE_RESOLUTION = frozenset({"opened", "acknowledged", "updated"})

#: A complaint record's fields (times are epoch seconds, ``None`` = not yet).
RECORD_FIELDS = (
    "state",  # opened | acknowledged | updated | resolved | reopened | closed
    "type",  # ComplaintType value, None until known
    "channel",  # ComplaintChannel value, None until known
    "severity",  # Severity value, None until known
    "opened_at",
    "acknowledged_at",  # first acknowledgment
    "responded_at",  # first acknowledgment, resolution or closing
    "resolved_at",  # latest resolution (cleared by a reopening)
    "closed_at",  # latest closing (cleared by a reopening)
    "reopened_at",  # latest reopening
    "last_at",  # event time of the latest applied event
    "reopens",  # how many times it was reopened
    "satisfied",  # what the latest closing said (True, False, None)
    "cause",  # event id of the opening (the first event seen, until then)
    "round_cause",  # event id that started the current round (opening or reopening)
    "first_response",  # SLA status: None (pending), "met", "breached"
    "solution",  # SLA status of the current round
)


@dataclass
class ComplaintOutcome:
    """What one complaint event or timer produced (the state is changed in place)."""

    #: Escalations for service staff and satisfaction follow-ups.
    actions: list[Action] = field(default_factory=list)
    #: (complaint type, deadline) missed -> ``crm_sla_breaches_total``.
    breaches: list[tuple[str, str]] = field(default_factory=list)
    #: (complaint type, deadline) met -> ``crm_sla_met_total``.
    met: list[tuple[str, str]] = field(default_factory=list)
    #: Complaint types opened -> ``crm_complaints_opened_total``.
    opened: list[str] = field(default_factory=list)
    #: Complaint types opened past ``complaints.max_open``: counted, not tracked.
    untracked: list[str] = field(default_factory=list)
    #: (complaint type, deadline) whose timer the caller's ``timer_limit`` refused.
    unscheduled: list[tuple[str, str]] = field(default_factory=list)
    #: (complaint type, satisfied) of a closing that says whether the customer is
    #: satisfied -> ``crm_complaint_satisfaction_total`` (the satisfaction KPI).
    satisfaction: list[tuple[str, bool]] = field(default_factory=list)
    #: (complaint type, seconds on event time from the round's start -- opening, or the
    #: latest reopening -- to its resolution, or its closing if it was not resolved first)
    #: -> ``crm_complaint_handling_seconds`` (see :func:`handling_time`).
    handling: list[tuple[str, float]] = field(default_factory=list)


def open_complaints(state: CustomerState) -> int:
    """How many of the customer's complaints are open (not resolved, not closed)."""
    return sum(1 for rec in state.complaints.values() if rec["state"] in OPEN_STATES)


# -- events -------------------------------------------------------------------------

_EVENTS = (
    cs.ComplaintOpened,
    cs.ComplaintAcknowledged,
    cs.ComplaintUpdated,
    cs.ComplaintResolved,
    cs.ComplaintReopened,
    cs.ComplaintClosed,
)
_STATE_AFTER: dict[type[BaseModel], str] = {
    cs.ComplaintAcknowledged: "acknowledged",
    cs.ComplaintUpdated: "updated",
    cs.ComplaintResolved: "resolved",
    cs.ComplaintReopened: "reopened",
    cs.ComplaintClosed: "closed",
}


def on_complaint_event(
    state: CustomerState, event: BaseModel, rules: Rules, *, timer_limit: int | None = None
) -> ComplaintOutcome:
    """Apply one complaint event to ``state.complaints`` and the complaint timers.

    Other events are ignored (empty outcome). ``timer_limit`` is the most timers
    a customer may have in all (``agents.timers.set_timer``); ``None``: only
    the complaint bounds apply. Event-driven actions (reopened, unsatisfied) are
    created at the event's time on the event clock.
    """
    out = ComplaintOutcome()
    cfg = rules.complaints
    if not isinstance(event, _EVENTS):
        return out
    at = event.at
    cid = event.complaint_id
    event_id = event.event_id
    rec = state.complaints.get(cid)
    if isinstance(event, cs.ComplaintOpened):
        if rec is not None and rec["opened_at"] is not None:
            return out  # a repeated opening
        out.opened.append(event.complaint_type.value)
        if rec is None:
            if open_complaints(state) >= cfg.max_open:
                out.untracked.append(event.complaint_type.value)
                return out
            rec = state.complaints[cid] = _new_record(event_id)
        rec["type"] = event.complaint_type.value
        rec["channel"] = event.channel.value
        rec["severity"] = event.severity.value
        rec["opened_at"] = at
        solved = _solved_at(rec)
        if rec["reopens"] == 0 and solved is not None:  # settled before its opening arrived
            out.handling.append((_type_of(rec), max(0.0, solved - at)))
        rec["cause"] = event_id
        if rec["reopens"] == 0:
            rec["round_cause"] = event_id
        _touch(rec, at)
    else:
        if rec is None:
            if _STATE_AFTER[type(event)] in OPEN_STATES and open_complaints(state) >= cfg.max_open:
                return out  # would be one open complaint too many: not tracked
            rec = state.complaints[cid] = _new_record(event_id)
        late = rec["last_at"] is not None and at < rec["last_at"]
        _record_milestones(rec, event, at, late)
        if not late or (
            isinstance(event, cs.ComplaintResolved) and rec["state"] in _BEFORE_RESOLUTION
        ):
            _transition(state, cid, rec, event, at, cfg, out, timer_limit)
            _touch(rec, at)
    _reconcile(state, cid, rec, cfg, out, timer_limit)
    _keep_settled(state, cfg.keep_settled)
    return out


def _new_record(cause: str) -> dict[str, Any]:
    rec: dict[str, Any] = dict.fromkeys(RECORD_FIELDS)
    rec.update(state="opened", reopens=0, cause=cause, round_cause=cause)
    return rec


def _touch(rec: dict[str, Any], at: float) -> None:
    if rec["last_at"] is None or at > rec["last_at"]:
        rec["last_at"] = at


def _earliest(current: float | None, at: float) -> float:
    return at if current is None or at < current else current


def _record_milestones(rec: dict[str, Any], event: BaseModel, at: float, late: bool) -> None:
    """Milestone times an event proves, whether or not it is late."""
    if isinstance(event, cs.ComplaintAcknowledged):
        rec["acknowledged_at"] = _earliest(rec["acknowledged_at"], at)
    if isinstance(event, cs.ComplaintAcknowledged | cs.ComplaintResolved | cs.ComplaintClosed):
        rec["responded_at"] = _earliest(rec["responded_at"], at)
    if isinstance(event, cs.ComplaintUpdated):
        # A late update never overwrites what a later one set.
        if event.complaint_type is not None and (not late or rec["type"] is None):
            rec["type"] = event.complaint_type.value
        if event.severity is not None and (not late or rec["severity"] is None):
            rec["severity"] = event.severity.value
    if late and isinstance(event, cs.ComplaintResolved) and rec["state"] == "closed":
        rec["resolved_at"] = _earliest(rec["resolved_at"], at)


def _transition(
    state: CustomerState,
    cid: str,
    rec: dict[str, Any],
    event: BaseModel,
    at: float,
    cfg: ComplaintRules,
    out: ComplaintOutcome,
    limit: int | None,
) -> None:
    """The state change of an in-order event, with its follow-up timer and escalations."""
    current = rec["state"]
    event_id: str = event.event_id  # type: ignore[attr-defined]
    if isinstance(event, cs.ComplaintAcknowledged):
        if current == "opened":
            rec["state"] = "acknowledged"
    elif isinstance(event, cs.ComplaintUpdated):
        if current in OPEN_STATES:
            rec["state"] = "updated"
    elif isinstance(event, cs.ComplaintResolved):
        if current in SETTLED_STATES:
            return  # a repeat, or a resolution after the closing: nothing new
        handling_time(rec, at, out)
        rec["state"] = "resolved"
        rec["resolved_at"] = at
        follow = cfg.follow_up
        if cfg.enabled and follow.enabled:
            timer = Timer(
                at + follow.after_hours * 3600, FOLLOW_UP, cid, event_id, {"round": rec["reopens"]}
            )
            _schedule(state, timer, limit, out, _type_of(rec), D_FOLLOW_UP)
    elif isinstance(event, cs.ComplaintReopened):
        if current == "reopened":
            return  # a repeat: one escalation per reopening
        rec.update(
            state="reopened",
            reopens=rec["reopens"] + 1,
            reopened_at=at,
            resolved_at=None,
            closed_at=None,
            satisfied=None,
            round_cause=event_id,
            solution=None,
        )
        timers.cancel(state.timers, FOLLOW_UP, cid)
        timers.cancel(state.timers, SOLUTION, cid)
        if cfg.enabled:
            out.actions.append(
                _escalation(state, cid, rec, K_REOPENED, at, event_id, ClockMode.EVENT, cfg)
            )
    elif isinstance(event, cs.ComplaintClosed):
        if current == "closed":
            return  # a repeat
        if current in OPEN_STATES:  # closed without a resolution first
            handling_time(rec, at, out)
        rec.update(state="closed", closed_at=at, satisfied=event.satisfied)
        if event.satisfied is not None:
            out.satisfaction.append((_type_of(rec), bool(event.satisfied)))
            timers.cancel(state.timers, FOLLOW_UP, cid)  # satisfaction already known
        if event.satisfied is False and cfg.enabled:
            out.actions.append(
                _escalation(state, cid, rec, K_UNSATISFIED, at, event_id, ClockMode.EVENT, cfg)
            )


def handling_time(rec: dict[str, Any], at: float, out: ComplaintOutcome) -> None:
    """Note the handling time of a complaint settled at ``at`` in order (the KPI
    "complaint handling time", domain.md section 8): on event time, from the start of
    its current round -- the opening, or the latest reopening -- to ``at``. Nothing
    while the opening is unknown (the opening notes it when it arrives)."""
    start = rec["reopened_at"] if rec["reopens"] else rec["opened_at"]
    if start is not None:
        out.handling.append((_type_of(rec), max(0.0, at - start)))


def _reconcile(
    state: CustomerState,
    cid: str,
    rec: dict[str, Any],
    cfg: ComplaintRules,
    out: ComplaintOutcome,
    limit: int | None,
) -> None:
    """Settle the deadlines the record already decides; keep a timer on the others."""
    if not cfg.enabled:
        return
    ctype = _type_of(rec)
    opened_at = rec["opened_at"]
    if opened_at is not None and rec["first_response"] is None:
        due = opened_at + _first_response_hours(rec, cfg) * 3600
        responded = rec["responded_at"]
        if responded is not None and responded < due:
            rec["first_response"] = "met"
            out.met.append((ctype, D_FIRST_RESPONSE))
            timers.cancel(state.timers, FIRST_RESPONSE, cid)
        else:
            timer = Timer(due, FIRST_RESPONSE, cid, rec["cause"], {"round": 0})
            _schedule(state, timer, limit, out, ctype, D_FIRST_RESPONSE)
    start = rec["reopened_at"] if rec["reopens"] else opened_at
    if start is None or rec["solution"] is not None:
        return
    if not is_complex(rec, cfg):
        timers.cancel(state.timers, SOLUTION, cid)
        return
    due = add_working_days(start, cfg.solution.working_days, cfg.calendar)
    solved = _solved_at(rec)
    if solved is not None and solved < due:
        rec["solution"] = "met"
        out.met.append((ctype, D_SOLUTION))
        timers.cancel(state.timers, SOLUTION, cid)
    else:
        timer = Timer(due, SOLUTION, cid, rec["round_cause"], {"round": rec["reopens"]})
        _schedule(state, timer, limit, out, ctype, D_SOLUTION)


def _schedule(
    state: CustomerState,
    timer: Timer,
    limit: int | None,
    out: ComplaintOutcome,
    ctype: str,
    deadline: str,
) -> None:
    """Set ``timer`` unless the same one is already set."""
    if timers.find(state.timers, timer.kind, timer.key) == timer:
        return
    cap = len(state.timers) + 1 if limit is None else limit
    if not timers.set_timer(state.timers, timer, cap):
        out.unscheduled.append((ctype, deadline))


def _keep_settled(state: CustomerState, keep: int) -> None:
    """Drop the oldest resolved/closed complaints past ``keep`` (closed ones first)."""
    settled = [
        (cid, rec) for cid, rec in state.complaints.items() if rec["state"] in SETTLED_STATES
    ]
    excess = len(settled) - keep
    if excess <= 0:
        return
    settled.sort(key=lambda item: (item[1]["state"] != "closed", item[1]["last_at"] or 0.0))
    for cid, _ in settled[:excess]:
        del state.complaints[cid]
        for kind in COMPLAINT_TIMER_KINDS:
            timers.cancel(state.timers, kind, cid)


# -- timers -------------------------------------------------------------------------


def on_complaint_timer(
    state: CustomerState, timer: Timer, now: float, clock: ClockMode, rules: Rules
) -> ComplaintOutcome:
    """A complaint timer fell due (the caller already removed it from ``state.timers``).

    ``now`` is the time on the active clock ``clock`` when it fires (at or after
    ``timer.due``); actions are created at ``timer.due``. A timer that no
    longer matches its complaint (dropped, already settled, an older round) does
    nothing.
    """
    out = ComplaintOutcome()
    cfg = rules.complaints
    rec = state.complaints.get(timer.key)
    if timer.kind not in COMPLAINT_TIMER_KINDS or rec is None or not cfg.enabled:
        return out
    cid = timer.key
    ctype = _type_of(rec)
    round_ = timer.data.get("round", 0)
    if timer.kind == FIRST_RESPONSE:
        if rec["first_response"] is not None:
            return out
        responded = rec["responded_at"]
        if responded is not None and responded < timer.due:
            rec["first_response"] = "met"
            out.met.append((ctype, D_FIRST_RESPONSE))
            return out
        rec["first_response"] = "breached"
        kind = D_FIRST_RESPONSE
    elif timer.kind == SOLUTION:
        if rec["solution"] is not None or round_ != rec["reopens"] or not is_complex(rec, cfg):
            return out
        solved = _solved_at(rec)
        if solved is not None and solved < timer.due:
            rec["solution"] = "met"
            out.met.append((ctype, D_SOLUTION))
            return out
        rec["solution"] = "breached"
        kind = D_SOLUTION
    else:
        return _follow_up(state, rec, timer, now, clock, cfg)
    out.breaches.append((ctype, kind))
    out.actions.append(
        _escalation(state, cid, rec, kind, timer.due, timer.cause, clock, cfg, deadline=timer.due)
    )
    return out


def _follow_up(
    state: CustomerState,
    rec: dict[str, Any],
    timer: Timer,
    now: float,
    clock: ClockMode,
    cfg: ComplaintRules,
) -> ComplaintOutcome:
    out = ComplaintOutcome()
    follow = cfg.follow_up
    if (
        not follow.enabled
        or timer.data.get("round", 0) != rec["reopens"]
        or rec["state"] not in SETTLED_STATES
        or rec["satisfied"] is not None
    ):
        return out  # reopened or satisfaction known since: nothing to ask
    ctype = _type_of(rec)
    expires = timer.due + follow.expires_after_hours * 3600
    if now >= expires:
        out.breaches.append((ctype, D_FOLLOW_UP))  # too late to ask: not sent
        return out
    out.met.append((ctype, D_FOLLOW_UP))
    channel = (
        state.profile.preferred_channels[0]
        if follow.use_preferred_channel and state.profile.preferred_channels
        else follow.channel
    )
    cid = timer.key
    out.actions.append(
        Action(
            action_id=action_id_for(
                RULE_IDS[D_FOLLOW_UP], state.customer_id, f"{cid}:{D_FOLLOW_UP}:{rec['reopens']}"
            ),
            customer_id=state.customer_id,
            action_type=ActionType.SATISFACTION_FOLLOW_UP,
            priority=Priority.SERVICE,
            channel=Channel(channel),
            template_id=follow.template_id,
            params={"complaint_id": cid, "complaint_type": ctype, "survey": follow.survey},
            reason=(
                f"Complaint {cid} ({ctype}) was resolved {follow.after_hours:g} h ago: "
                "ask whether the customer is satisfied with the solution."
            ),
            rule_id=RULE_IDS[D_FOLLOW_UP],
            trigger_event_ids=[timer.cause],
            created_at=_utc(timer.due),
            clock=clock,
            expires_at=_utc(expires),
        )
    )
    return out


# -- actions ------------------------------------------------------------------------


def _escalation(
    state: CustomerState,
    cid: str,
    rec: dict[str, Any],
    kind: str,
    at: float,
    trigger: str,
    clock: ClockMode,
    cfg: ComplaintRules,
    deadline: float | None = None,
) -> Action:
    """One escalation for service staff (``escalation.channel``: phone = a supervisor calls)."""
    ctype = _type_of(rec)
    params: dict[str, str | int | float | bool] = {
        "complaint_id": cid,
        "complaint_type": ctype,
        "deadline_kind": kind,
        "suggestion": suggestion_for(rec, cfg),
    }
    if deadline is not None:
        params["deadline"] = _utc(deadline).isoformat()
    return Action(
        action_id=action_id_for(
            RULE_IDS[kind], state.customer_id, f"{cid}:{kind}:{rec['reopens']}"
        ),
        customer_id=state.customer_id,
        action_type=ActionType.COMPLAINT_ESCALATION,
        priority=Priority.SERVICE,
        channel=Channel(cfg.escalation.channel),
        template_id=cfg.escalation.template_id,
        params=params,
        reason=_reason(cid, rec, kind, deadline, cfg),
        rule_id=RULE_IDS[kind],
        trigger_event_ids=[trigger],
        created_at=_utc(at),
        clock=clock,
    )


def _reason(
    cid: str, rec: dict[str, Any], kind: str, deadline: float | None, cfg: ComplaintRules
) -> str:
    """A readable reason: ids, codes and times only, never the complaint's note."""
    what = f"Complaint {cid} ({_type_of(rec)}"
    if rec["channel"]:
        what += f", via {rec['channel']}"
    if rec["severity"]:
        what += f", severity {rec['severity']}"
    what += ")"
    due = "" if deadline is None else f" (due {_utc(deadline).isoformat()})"
    if kind == D_FIRST_RESPONSE:
        hours = _first_response_hours(rec, cfg)
        return f"{what}: no first response within {hours:g} h{due}; a supervisor should call back."
    if kind == D_SOLUTION:
        days = cfg.solution.working_days
        return f"{what}: not solved within {days} working days{due}; escalate to a supervisor."
    if kind == K_REOPENED:
        return f"{what} was reopened (reopening {rec['reopens']}); escalate to a supervisor."
    return f"{what} was closed with the customer still unhappy; escalate to a supervisor."


def suggestion_for(rec: dict[str, Any], cfg: ComplaintRules) -> str:
    """The resolution suggestion code: the first ``suggestions`` row matching type and severity."""
    for row in cfg.suggestions:
        if row.complaint_type == rec["type"] and (
            not row.severities or rec["severity"] in row.severities
        ):
            return row.suggestion
    return cfg.default_suggestion


# -- deadlines ----------------------------------------------------------------------


def is_complex(rec: dict[str, Any], cfg: ComplaintRules) -> bool:
    """Whether a complaint gets a solution deadline (by severity or type)."""
    rule = cfg.solution
    return rec["severity"] in rule.complex_severities or rec["type"] in rule.complex_types


def add_working_days(start: float, days: int, calendar: WorkCalendar) -> float:
    """The same local wall time ``days`` working days after ``start`` (epoch seconds).

    Working days are ``calendar.working_weekdays`` minus ``calendar.holidays``,
    counted in ``calendar.timezone``, so the result is DST-correct. A wall time
    that does not exist on the due day (a spring-forward gap) moves forward by
    the gap; an ambiguous one (fall-back) takes its first occurrence.
    """
    zone = ZoneInfo(calendar.timezone)
    local = dt.datetime.fromtimestamp(start, zone)
    day = local.date()
    weekdays = calendar.working_weekdays
    holidays = calendar.holiday_dates
    counted = 0
    while counted < days:
        day += dt.timedelta(days=1)
        if day.isoweekday() in weekdays and day not in holidays:
            counted += 1
    return dt.datetime.combine(day, local.time().replace(fold=0), tzinfo=zone).timestamp()


def _first_response_hours(rec: dict[str, Any], cfg: ComplaintRules) -> float:
    rule = cfg.first_response
    return rule.fast_hours if rec["channel"] in rule.fast_channels else rule.hours


def _solved_at(rec: dict[str, Any]) -> float | None:
    times = [t for t in (rec["resolved_at"], rec["closed_at"]) if t is not None]
    return min(times) if times else None


def _type_of(rec: dict[str, Any]) -> str:
    return rec["type"] or UNKNOWN_TYPE


def _utc(at: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(at, dt.UTC)
