"""The staff pages' HTML and access checks (served by :mod:`streams.web` under ``/ui``).

Server-rendered HTML, no JavaScript: the customer page (the lookup document of
:mod:`agents.lookup`), a flag's review form, and the operator page (open flags and
complaints near their deadline). Every value from a document is escaped
(:func:`e`), every id in a URL percent-encoded (:func:`seg`).

Access (:func:`authorize`): the pages exist only with ``CRM_UI_ENABLED``; then a
request needs the token (``Authorization: Bearer``) or the basic-auth user and
password from the settings, compared in constant time. A review form carries a
token bound to the customer and the flag (:func:`review_token`, an HMAC keyed by the
configured secrets), so another site cannot make a signed-in browser post one.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import html
import urllib.parse
from collections.abc import Iterable
from typing import Any

from streams.settings import Settings

#: Who a request is: the basic-auth user (a person: service staff) or a token holder.
STAFF = "staff"
TOKEN = "token"

#: Sent with every page (a forwarded lookup keeps only its body and type).
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
CHALLENGE = {"WWW-Authenticate": 'Basic realm="crmstream staff", charset="UTF-8"'}

#: Complaints whose next deadline is within this many seconds show on the operator page.
NEAR_DEADLINE = 24 * 3600.0


def e(value: Any) -> str:
    """``value`` as HTML text, escaped (quotes too: safe in attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def plural(count: Any) -> str:
    """``"s"`` unless ``count`` is one: ``f"{n} order{plural(n)}"``."""
    return "" if count == 1 else "s"


def when(iso: Any) -> str:
    """An ISO 8601 time from a document for a person: ``2026-03-01 09:30 UTC``, escaped."""
    if not iso:
        return ""
    try:
        at = dt.datetime.fromisoformat(str(iso).replace("Z", "+00:00")).astimezone(dt.UTC)
    except ValueError:
        return e(iso)
    return e(at.strftime("%Y-%m-%d %H:%M UTC"))


def seg(value: str) -> str:
    """``value`` as one URL path segment."""
    return urllib.parse.quote(value, safe="")


# -- access ------------------------------------------------------------------------


def authorize(header: str | None, settings: Settings) -> str | None:
    """The role of a request's ``Authorization`` header (:data:`STAFF`, :data:`TOKEN`),
    or None: no credentials, or wrong ones. Every comparison takes constant time."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    token, password = settings.ui_token.get_secret_value(), settings.ui_password.get_secret_value()
    if scheme.lower() == "bearer" and token:
        return TOKEN if _same(value, token) else None
    if scheme.lower() == "basic" and password:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, given = decoded.partition(":")
        # both compared, always: no early exit telling which one was wrong
        ok = _same(user, settings.ui_username) & _same(given, password)
        return STAFF if sep and ok else None
    return None


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def review_token(settings: Settings, customer_id: str, flag_id: str) -> str:
    """The form token of a review of ``flag_id`` on ``customer_id`` (same on every worker)."""
    token, password = settings.ui_token.get_secret_value(), settings.ui_password.get_secret_value()
    key = f"{token}\x00{password}".encode()
    message = f"flag-review\x00{customer_id}\x00{flag_id}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def valid_review_token(settings: Settings, customer_id: str, flag_id: str, given: str) -> bool:
    return _same(given, review_token(settings, customer_id, flag_id))


# -- pages -------------------------------------------------------------------------

_STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
color:#1d232b;background:#f5f6f8}
header{background:#1f3a5f;color:#fff;padding:.6em 1.2em;display:flex;gap:1.5em;
align-items:center;flex-wrap:wrap}
header a{color:#fff;font-weight:600;text-decoration:none}
header form{margin-left:auto}
main{max-width:1180px;margin:0 auto;padding:1em 1.2em 3em}
h1{font-size:1.45em;margin:.4em 0 .1em}h2{font-size:1.1em;margin:1.6em 0 .5em;
border-bottom:1px solid #d5d9e0;padding-bottom:.2em}
.muted{color:#5b6573}.grid{display:grid;grid-template-columns:repeat(auto-fit,
minmax(260px,1fr));gap:.8em}
.card{background:#fff;border:1px solid #d5d9e0;border-radius:6px;padding:.7em .9em}
.card b{display:block;font-size:1.05em}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #d5d9e0}
th,td{text-align:left;padding:.35em .55em;border-bottom:1px solid #e6e9ee;vertical-align:top}
th{background:#eef1f5;font-weight:600;font-size:.92em}
.tag{display:inline-block;background:#e8edf5;border-radius:3px;padding:0 .4em;margin:1px;
font-size:.88em}
.ok{color:#17652d}.no{color:#a4161a}.warn{color:#8a5300}
tr.overdue td{background:#fde8e8}tr.soon td{background:#fff5dd}
.notice{background:#e6f4ea;border:1px solid #a8d5b5;padding:.6em .9em;border-radius:6px}
.error{background:#fde8e8;border:1px solid #f0b4b4;padding:.6em .9em;border-radius:6px}
label{display:block;margin:.6em 0 .2em;font-weight:600}
input[type=text],textarea{width:100%;max-width:560px;padding:.35em;font:inherit;
box-sizing:border-box}
button{font:inherit;padding:.35em 1em;margin:.6em .5em 0 0;cursor:pointer}
code{font-size:.9em}
"""


def layout(title: str, body: str, query: str = "") -> str:
    """A whole page: header with the search box by customer id, then ``body``."""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{e(title)} · crmstream</title><style>{_STYLE}</style></head><body>"
        '<header><a href="/ui">crmstream · service staff</a>'
        '<form method=get action="/ui/customers" role=search>'
        '<label for=q style="display:inline;color:#fff;font-weight:400">Customer id </label>'
        f'<input id=q name=id type=text value="{e(query)}" required maxlength=128 '
        'style="width:16em"> <button type=submit>Open</button></form></header>'
        f"<main>{body}</main></body></html>"
    )


def message_page(title: str, text: str, query: str = "") -> str:
    return layout(title, f"<h1>{e(title)}</h1><p class=error>{e(text)}</p>", query)


def left(seconds: int) -> str:
    """Time to a deadline for a person: ``1 h 30 min left`` / ``overdue by 5 min``."""
    span = abs(int(seconds))
    days, rest = divmod(span, 86_400)
    hours, minutes = rest // 3600, rest % 3600 // 60
    if days:
        text = f"{days} d {hours} h"
    elif hours:
        text = f"{hours} h {minutes:02d} min"
    else:
        text = f"{minutes} min"
    return f"{text} left" if seconds > 0 else f"overdue by {text}"


def _urgency(seconds: int) -> str:
    return "overdue" if seconds <= 0 else "soon" if seconds <= 4 * 3600 else ""


def customer_page(
    doc: dict[str, Any],
    *,
    reviews: bool,
    notice: str = "",
    contact_link: str = "",
) -> str:
    """The customer page for one lookup document."""
    cid = str(doc["customer_id"])
    stage, rfm, grade = doc["stage"], doc["rfm"], doc["grade"]
    parts = [
        f"<h1>Customer <code>{e(cid)}</code></h1>",
        f"<p class=muted>As of {when(doc['as_of'])} — {e(doc.get('as_of_reason') or '')}</p>",
    ]
    if notice:
        parts.append(f"<p class=notice role=status>{e(notice)}</p>")
    if contact_link:
        parts.append(
            f'<p><a href="{e(contact_link)}" rel="noreferrer">Contact details '
            "(platform record)</a></p>"
        )
    life = doc["lifetime"]
    parts.append(
        "<div class=grid>"
        f"<div class=card>Stage<b>{e(stage['name'])}</b><span class=muted>"
        f"{e(stage['reason'])}</span></div>"
        f"<div class=card>RFM group<b>{e(rfm['group'])}</b><span class=muted>"
        f"{e(rfm['reason'])}</span></div>"
        f"<div class=card>Grade<b>{e(grade['name'])} ({e(grade['score'])})</b>"
        f"<span class=muted>{e(grade['reason'])}</span></div>"
        f"<div class=card>Lifetime<b>{e(life['orders'])} order{plural(life['orders'])}, "
        f"{e(life['spend'])} spent</b>"
        f"<span class=muted>last purchase {when(life['last_purchase_at']) or 'never'}</span></div>"
        "</div>"
    )
    parts.append(
        "<p>" + "".join(f"<span class=tag>{e(t)}</span>" for t in doc.get("tags", [])) + "</p>"
    )
    parts.append(_channels(doc))
    parts.append(_complaints(doc.get("complaints") or []))
    parts.append(_flags(cid, doc.get("flags") or [], reviews))
    parts.append(_actions(doc.get("recent_actions") or []))
    parts.append(_decisions(doc.get("decisions") or []))
    parts.append(_timeline(doc.get("timeline") or []))
    return layout(f"Customer {cid}", "".join(parts), cid)


def _channels(doc: dict[str, Any]) -> str:
    channels = doc.get("channels") or {}
    consents = doc.get("consents") or []
    names = list(dict.fromkeys(c["channel"] for c in consents))
    purposes = list(dict.fromkeys(c["purpose"] for c in consents))
    cell = {(c["purpose"], c["channel"]): c for c in consents}
    rows = []
    for purpose in purposes:
        cells = []
        for name in names:
            c = cell[(purpose, name)]
            word = "allowed" if c["allowed"] else "not allowed"
            given = "default" if c["given"] is None else "granted" if c["given"] else "withdrawn"
            cls = "ok" if c["allowed"] else "no"
            cells.append(f"<td class={cls}>{e(word)}<br><small>{e(given)}</small></td>")
        rows.append(f"<tr><th scope=row>{e(purpose)}</th>{''.join(cells)}</tr>")
    head = "".join(f"<th scope=col>{e(n)}</th>" for n in names)
    preferred = ", ".join(channels.get("preferred") or []) or "none given"
    unreachable = ", ".join(channels.get("unreachable") or []) or "none known"
    return (
        "<h2 id=consent>Channels and consent</h2>"
        f"<p>Preferred: <b>{e(preferred)}</b> · Unreachable: <b>{e(unreachable)}</b></p>"
        f"<table><tr><th>purpose</th>{head}</tr>{''.join(rows)}</table>"
    )


def _complaints(complaints: list[dict[str, Any]]) -> str:
    if not complaints:
        return "<h2 id=complaints>Open complaints</h2><p class=muted>None open.</p>"
    rows = []
    for c in complaints:
        deadlines = c["deadlines"]
        nearest = min((d["seconds_left"] for d in deadlines), default=None)
        cls = "" if nearest is None else _urgency(nearest)
        sla = (
            f"first response: {e(c['first_response'] or 'pending')}<br>"
            f"solution: {e(c['solution'] or 'pending')}"
        )
        due = (
            "<br>".join(
                f"{e(d['deadline'])} due {when(d['due'])} "
                f"<b class={'no' if d['overdue'] else 'warn'}>{e(left(d['seconds_left']))}</b>"
                for d in deadlines
            )
            or "<span class=muted>no deadline pending</span>"
        )
        rows.append(
            f'<tr id="complaint-{e(c["complaint_id"])}" class={cls}>'
            f"<td><code>{e(c['complaint_id'])}</code></td><td>{e(c['type'])}</td>"
            f"<td>{e(c['severity'])}</td><td>{e(c['channel'])}</td><td>{e(c['state'])}</td>"
            f"<td>{when(c['opened_at'])}</td><td>{sla}</td><td>{due}</td></tr>"
        )
    return (
        "<h2 id=complaints>Open complaints</h2><table><tr><th>id</th><th>type</th>"
        "<th>severity</th><th>via</th><th>state</th><th>opened</th><th>SLA state</th>"
        f"<th>deadlines</th></tr>{''.join(rows)}</table>"
    )


def flag_url(customer_id: str, flag_id: str) -> str:
    return f"/ui/customers/{seg(customer_id)}/flags/{seg(flag_id)}"


def _flags(customer_id: str, flags: list[dict[str, Any]], reviews: bool) -> str:
    if not flags:
        return "<h2 id=flags>Flags</h2><p class=muted>No open flags.</p>"
    rows = []
    for f in flags:
        if f["source"] != "flag":
            rows.append(
                f"<tr><td colspan=3>{e(f['kind'])}</td><td colspan=3 class=muted>"
                "risk tag from a threshold rule (no review needed)</td></tr>"
            )
            continue
        link = (
            f'<a href="{e(flag_url(customer_id, f["flag_id"]))}">review (clear or confirm)</a>'
            if reviews
            else f"<span class=muted>crmstream flags clear|confirm {e(f['flag_id'])}</span>"
        )
        evidence = ", ".join(f.get("evidence_event_ids") or []) or "-"
        rows.append(
            f'<tr id="flag-{e(f["flag_id"])}"><td>{e(f["kind"])}<br>'
            f"<code>{e(f['flag_id'])}</code></td><td>{e(f['status'])}</td>"
            f"<td>{when(f['raised_at'])}</td><td>{e(f.get('reason') or '')}</td>"
            f"<td><small>{e(evidence)}</small></td><td>{link}</td></tr>"
        )
    return (
        "<h2 id=flags>Flags</h2><table><tr><th>kind / id</th><th>status</th><th>raised</th>"
        f"<th>reason</th><th>evidence</th><th></th></tr>{''.join(rows)}</table>"
    )


def _actions(actions: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{when(a['created_at'])}</td><td>{e(a['action_type'])}</td>"
        f"<td>{e(a.get('channel') or '')}</td><td>{e(a.get('rule_id') or '')}</td>"
        f"<td>{e(a.get('reason') or '')}</td></tr>"
        for a in actions
    )
    if not rows:
        return "<h2 id=actions>Recent actions</h2><p class=muted>None sent.</p>"
    return (
        f"<h2 id=actions>Recent actions ({len(actions)})</h2><table><tr><th>sent</th>"
        f"<th>action</th><th>channel</th><th>rule</th><th>reason</th></tr>{rows}</table>"
    )


def _decisions(decisions: list[dict[str, Any]]) -> str:
    rows = []
    for d in decisions:
        cls = {"sent": "ok", "suppressed": "no", "deferred": "warn"}.get(d["decision"], "")
        until = f"<br>until {when(d['not_before'])}" if d.get("not_before") else ""
        rows.append(
            f"<tr><td>{when(d['decided_at'])}</td><td class={cls}><b>{e(d['decision'])}</b>"
            f"{until}</td><td>{e(d['action_type'])}</td><td>{e(d['channel'] or '')}</td>"
            f"<td>{e(d['code'] or '')}</td><td>{e(d['reason'])}</td></tr>"
        )
    if not rows:
        return "<h2 id=decisions>Contact decisions</h2><p class=muted>None yet.</p>"
    return (
        f"<h2 id=decisions>Contact decisions ({len(rows)})</h2><table><tr><th>decided</th>"
        "<th>decision</th><th>action</th><th>channel</th><th>code</th><th>reason</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _timeline(events: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{when(ev['occurred_at'])}</td><td>{e(ev['type'])}</td><td>{e(ev['ref'])}</td></tr>"
        for ev in events
    )
    if not rows:
        return "<h2 id=timeline>Recent events</h2><p class=muted>None.</p>"
    return (
        "<h2 id=timeline>Recent events</h2><p class=muted>Newest first; browsing and "
        "routine deliveries, opens and clicks left out."
        f"</p><table><tr><th>when</th><th>event</th><th>what</th></tr>{rows}</table>"
    )


def review_form(
    customer_id: str, flag: dict[str, Any], token: str, error: str = "", operator: str = ""
) -> str:
    """The form that clears or confirms one flag (``crmstream flags clear|confirm``)."""
    fid = str(flag["flag_id"])
    problem = f"<p class=error role=alert>{e(error)}</p>" if error else ""
    evidence = ", ".join(flag.get("evidence_event_ids") or []) or "-"
    body = (
        f'<p><a href="/ui/customers/{e(seg(customer_id))}">← customer '
        f"<code>{e(customer_id)}</code></a></p>"
        f"<h1>Review flag <code>{e(fid)}</code></h1>{problem}"
        f"<p><b>{e(flag['kind'])}</b>, {e(flag['status'])}, raised {when(flag['raised_at'])}</p>"
        f"<p>{e(flag.get('reason') or '')}</p><p class=muted>Evidence: {e(evidence)}</p>"
        f'<form method=post action="{e(flag_url(customer_id, fid))}">'
        f'<input type=hidden name=token value="{e(token)}">'
        "<label for=operator>Operator (your name)</label>"
        f'<input id=operator name=operator type=text required maxlength=100 value="{e(operator)}">'
        "<label for=reason>Reason (kept in the audit log on crm.flags; no personal data)</label>"
        "<textarea id=reason name=reason required maxlength=500 rows=3></textarea><br>"
        "<button type=submit name=decision value=cleared>Clear (false positive)</button>"
        "<button type=submit name=decision value=confirmed>Confirm</button></form>"
        "<p class=muted>Sends the same command as <code>crmstream flags clear|confirm</code>; "
        "the worker that owns the customer applies it and records the review on crm.flags."
        "</p>"
    )
    return layout(f"Flag {fid}", body, customer_id)


def operator_page(
    complaints: Iterable[dict[str, Any]],
    flags: Iterable[dict[str, Any]],
    scope: str,
) -> str:
    """Open complaints near their deadline (most urgent first) and open flags (longest
    waiting first), each linking to its customer's page."""
    crow = []
    for c in sorted(complaints, key=lambda c: c["seconds_left"]):
        url = f"/ui/customers/{seg(c['customer_id'])}#complaint-{seg(c['complaint_id'])}"
        crow.append(
            f"<tr class={_urgency(c['seconds_left'])}><td><b>{e(left(c['seconds_left']))}</b>"
            f"</td><td>{e(c['deadline'])} due {when(c['due'])}</td>"
            f'<td><a href="{e(url)}">{e(c["customer_id"])}</a></td>'
            f"<td><code>{e(c['complaint_id'])}</code></td><td>{e(c['type'])}</td>"
            f"<td>{e(c['severity'])}</td></tr>"
        )
    frow = []
    for f in sorted(flags, key=lambda f: f["raised_at"] or ""):
        url = f"/ui/customers/{seg(f['customer_id'])}#flag-{seg(f['flag_id'])}"
        frow.append(
            f"<tr><td>{when(f['raised_at'])}</td><td>{e(f['kind'])}</td>"
            f'<td><a href="{e(url)}">{e(f["customer_id"])}</a></td>'
            f"<td><code>{e(f['flag_id'])}</code></td><td>{e(f.get('reason') or '')}</td></tr>"
        )
    body = (
        "<h1>Operator</h1>"
        f"<p class=muted>{e(scope)}</p>"
        f"<h2>Complaints near their deadline ({len(crow)})</h2>"
        + (
            "<table><tr><th>time left</th><th>deadline</th><th>customer</th><th>complaint</th>"
            f"<th>type</th><th>severity</th></tr>{''.join(crow)}</table>"
            if crow
            else "<p class=muted>None within 24 hours.</p>"
        )
        + f"<h2>Open flags ({len(frow)})</h2>"
        + (
            "<table><tr><th>raised</th><th>kind</th><th>customer</th><th>flag</th>"
            f"<th>reason</th></tr>{''.join(frow)}</table>"
            if frow
            else "<p class=muted>No open flags.</p>"
        )
    )
    return layout("Operator", body)


def urgent_items(
    customer_id: str, doc_complaints: list[dict[str, Any]], within: float = NEAR_DEADLINE
) -> list[dict[str, Any]]:
    """The operator page's rows for one customer's open complaints: each pending
    deadline within ``within`` seconds (or overdue)."""
    return [
        {
            "customer_id": customer_id,
            "complaint_id": c["complaint_id"],
            "type": c["type"],
            "severity": c["severity"],
            **d,
        }
        for c in doc_complaints
        for d in c["deadlines"]
        if d["seconds_left"] <= within
    ]
