"""crmstream agents: each module one agent (or one rule of it) with its pure decision."""
