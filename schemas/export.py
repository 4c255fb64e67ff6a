"""Export every contract as a JSON Schema file, for producers in other languages.

The files in ``schemas/json/`` are generated from the code; a test proves they
are current. Regenerate with ``crmstream schemas export``. Besides the contracts,
callers may add ready-made schemas (``documents``: stem -> (title, schema)); the
CLI adds the rules file's (``rules.v1.schema.json``, from :mod:`agents.rules`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from schemas import codec
from schemas.actions import Action
from schemas.changes import CustomerChange
from schemas.commands import ProposalProgress
from schemas.control import ClockTick
from schemas.conversions import Conversion
from schemas.deadletter import DeadLetter
from schemas.decisions import ActionDecision
from schemas.flags import Flag
from schemas.registry import FAMILIES
from schemas.signals import Signal, SourceProgress

SCHEMA_DIR = Path(__file__).parent / "json"

_TITLES = {
    "orders": "crmstream order event",
    "browsing": "crmstream browsing event",
    "reviews": "crmstream review event",
    "complaints": "crmstream complaint event",
    "customers": "crmstream customer event",
    "action_outcome": "crmstream messaging outcome of an action (delivered, opened, ...)",
    "commands": "crmstream command to the customer agent (internal topic crm.commands)",
    "action": "crmstream care or retention action",
    "dead_letter": "crmstream dead letter",
    "customer_change": "crmstream customer segment change",
    "flag": "crmstream anomaly flag or flag review",
    "action_decision": "crmstream contact-policy decision on an action",
    "signal": "crmstream cross-customer signal (internal topic crm.signals)",
    "signal_progress": "crmstream customer partition's progress (internal topic crm.signals)",
    "proposal_progress": "crmstream signals partition's promise (internal topic crm.commands)",
    "conversion": "crmstream purchase attributed to an action (treated or held out)",
    "clock_tick": "crmstream clock tick (control record on any input topic)",
}


#: Input families whose contract file is not named after the family.
FAMILY_STEMS = {"outcomes": "action_outcome"}


def contracts() -> dict[str, Any]:
    """Every exported contract by file stem."""
    return {
        **{FAMILY_STEMS.get(family, family): union for family, union in FAMILIES.items()},
        "action": Action,
        "dead_letter": DeadLetter,
        "customer_change": CustomerChange,
        "flag": Flag,
        "action_decision": ActionDecision,
        "signal": Signal,
        "signal_progress": SourceProgress,
        "proposal_progress": ProposalProgress,
        "conversion": Conversion,
        "clock_tick": ClockTick,
    }


Documents = Mapping[str, tuple[str, dict[str, Any]]]


def render(documents: Documents | None = None) -> dict[str, bytes]:
    """The file name -> bytes of every schema file."""
    schemas = {
        stem: (_TITLES[stem], TypeAdapter(contract).json_schema())
        for stem, contract in contracts().items()
    }
    schemas.update(documents or {})
    files: dict[str, bytes] = {}
    for stem, (title, schema) in schemas.items():
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"crmstream/{stem}.v1.schema.json",
            "title": title,
            **schema,
        }
        files[f"{stem}.v1.schema.json"] = codec.dumps_sorted(schema)
    return files


def stale_files(directory: Path = SCHEMA_DIR, documents: Documents | None = None) -> list[str]:
    """Names of schema files that are missing or differ from the code."""
    return sorted(
        name
        for name, content in render(documents).items()
        if not (directory / name).is_file() or (directory / name).read_bytes() != content
    )


def write(directory: Path = SCHEMA_DIR, documents: Documents | None = None) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in render(documents).items():
        path = directory / name
        path.write_bytes(content)
        written.append(path)
    return written
