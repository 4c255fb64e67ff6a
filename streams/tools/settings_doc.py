"""The settings reference (``docs/settings.md``): every environment variable a worker
reads, its default, the values it takes and what it means, generated from
:mod:`streams.settings` so that it cannot drift from the code. ``crmstream settings
reference`` prints it; a test holds the committed file equal to it.

``crmstream settings check`` reads this process's environment as a worker would and
says whether it would start, and with which variables changed from their defaults
(secrets masked).
"""

from __future__ import annotations

from collections.abc import Mapping

from streams.settings import REDIS_SECURITY_ENV, Settings, Topics, default_text, takes

PATH = "docs/settings.md"
#: Read by ``from_env`` and folded into ``REDIS_URL``: no setting of their own.
FOLDED = REDIS_SECURITY_ENV

_INTRO = """\
# Settings reference

Every environment variable a worker reads, generated from `streams/settings.py` by
`crmstream settings reference` (a test holds this file equal to it). README's
"Configuration" explains the settings most deployments touch. A value outside what a
variable takes stops the worker (and every `crmstream` command that reads the
settings) before anything starts, with an error naming the variable; an empty variable
keeps the default. `crmstream settings check` reads the current environment the same
way and says what it would run with.
"""


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _rows(model: type[Settings] | type[Topics], variables: Mapping[str, str]) -> list[str]:
    rows = []
    for field, variable in variables.items():
        info = model.model_fields[field]
        rows.append(
            f"| `{variable}` | {default_text(info)} | {_cell(takes(info))} "
            f"| {_cell(info.description or '')} |"
        )
    return rows


def reference() -> str:
    """The whole of ``docs/settings.md``."""
    header = ["| variable | default | takes | meaning |", "|---|---|---|---|"]
    topics = [
        "",
        "## Topic names",
        "",
        "Each topic's name: any name, as long as no two topics share one.",
        "",
        *header,
        *_rows(Topics, Topics.variables()),
    ]
    redis = ", ".join(f"`{name}`" for name in FOLDED)
    credentials = [
        "",
        "## Redis credentials",
        "",
        f"{redis}: none by default; folded into `REDIS_URL` when the settings are read",
        '(README, "Security").',
    ]
    worker = ["## Worker settings", "", *header, *_rows(Settings, Settings.variables())]
    return "\n".join([_INTRO, *worker, *credentials, *topics]) + "\n"


def changed(settings: Settings) -> dict[str, str]:
    """The variables whose value differs from the default, secrets masked."""
    default = Settings().as_env(redacted=True)
    return {
        name: value
        for name, value in settings.as_env(redacted=True).items()
        if value != default.get(name)
    }
