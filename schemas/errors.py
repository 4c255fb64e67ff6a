"""The one exception hierarchy of crmstream.

Input problems are never raised out of the pipeline: they become dead-letter
records (see :mod:`schemas.ingress`). These exceptions are for the operator:
bad configuration, a missing binary, an unreachable service at start-up.
"""

from __future__ import annotations


class CrmStreamError(Exception):
    """Base class of every error crmstream raises on purpose."""


class ConfigError(CrmStreamError):
    """A setting or rules-file entry is wrong; the message names the key."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"configuration error at '{key}': {problem}")


class BrokerUnreachable(CrmStreamError):
    """The Kafka broker did not answer in time."""


class EmbeddedServiceError(CrmStreamError):
    """An embedded broker or Redis server could not be found or started."""
