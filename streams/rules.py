"""Domain rules: every threshold, window and template, with domain.md's defaults.

The rules live in one TOML file (``CRM_RULES_FILE``); anything it leaves out
keeps the default below. A wrong file fails at start-up with a
:class:`~streams.errors.ConfigError` naming the key, e.g.
``configuration error at 'lifecycle.active_window_days': must be >= 1``.
"""

from __future__ import annotations

import tomllib
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

from schemas.base import Channel
from streams.errors import ConfigError


def _min(value: float) -> dict[str, float]:
    return {"min": value}


@dataclass(frozen=True)
class WelcomeRule:
    """domain.md §3: first purchase -> welcome with first-order gift and usage guide."""

    enabled: bool = True
    template_id: str = "welcome_first_order"
    channel: str = Channel.EMAIL.value
    gift: str = "first_order_gift"
    expires_after_days: int = field(default=30, metadata=_min(1))


@dataclass(frozen=True)
class LifecycleRules:
    """domain.md §2: potential (no purchase) -> new (first purchase) -> active."""

    #: Orders needed, the latest within ``active_window_days`` of the one before, to be active.
    active_min_orders: int = field(default=2, metadata=_min(2))
    active_window_days: int = field(default=30, metadata=_min(1))


@dataclass(frozen=True)
class StateRules:
    """Bounds that keep per-customer state small."""

    #: How many recent event ids per customer are remembered to drop retried sends.
    dedupe_window: int = field(default=64, metadata=_min(1))


@dataclass(frozen=True)
class Rules:
    welcome: WelcomeRule = field(default_factory=WelcomeRule)
    lifecycle: LifecycleRules = field(default_factory=LifecycleRules)
    state: StateRules = field(default_factory=StateRules)

    @classmethod
    def load(cls, path: str | Path | None) -> Rules:
        """Read a rules file; ``None`` or ``""`` gives the defaults."""
        if not path:
            return cls()
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("CRM_RULES_FILE", f"no such file: {path}") from None
        except IsADirectoryError:
            raise ConfigError("CRM_RULES_FILE", f"is a directory, not a file: {path}") from None
        except UnicodeDecodeError:
            raise ConfigError("CRM_RULES_FILE", f"not UTF-8 text: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), f"not valid TOML: {exc}") from None
        return cls.from_mapping(raw)

    @classmethod
    def from_mapping(cls, raw: dict[str, Any]) -> Rules:
        rules = _build(cls, raw, prefix="")
        assert isinstance(rules, Rules)
        rules._check()
        return rules

    def _check(self) -> None:
        if self.welcome.channel not in {c.value for c in Channel}:
            raise ConfigError(
                "welcome.channel", f"must be one of {', '.join(c.value for c in Channel)}"
            )


def _build(kind: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(prefix.rstrip(".") or "<root>", "expected a table")
    hints = get_type_hints(kind)
    known = {f.name: f for f in fields(kind)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(
            prefix + unknown[0], f"unknown key (known here: {', '.join(sorted(known))})"
        )
    values: dict[str, Any] = {}
    for name, value in raw.items():
        f = known[name]
        key = prefix + name
        hint = hints[name]
        if is_dataclass(hint):
            values[name] = _build(hint, value, key + ".")  # type: ignore[arg-type]
            continue
        values[name] = _check_scalar(key, hint, value, f.metadata)
    for name, f in known.items():
        if name not in values and f.default is MISSING and f.default_factory is MISSING:
            raise ConfigError(prefix + name, "is required")
    return kind(**values)


def _check_scalar(key: str, hint: Any, value: Any, metadata: Any) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, "expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, "expected an integer")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, "expected a number")
        value = float(value)
    elif hint is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(key, "expected a non-empty string")
        return value
    minimum = metadata.get("min")
    if minimum is not None and value < minimum:
        raise ConfigError(key, f"must be >= {minimum}")
    return value
