"""Entry points and operator tools: the ``crmstream`` CLI (:mod:`streams.tools.cli`),
the embedded stack (``up``/``demo``), replay and the simulator, the flag, clock and
customer lookups. They sit on the runtime and the domain; nothing below imports them
(an import-linter contract in pyproject.toml)."""
