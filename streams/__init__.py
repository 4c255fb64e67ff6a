"""crmstream runtime: the faust App and its topic/table registry, settings, rules,
codec, ingress, ledger, metrics, embedded services, simulator and CLI."""
