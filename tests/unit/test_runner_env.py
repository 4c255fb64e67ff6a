"""``crmstream up`` / ``demo``: the workers' settings come from the user's environment,
flags win over it, and the embedded stack sets only what it must own."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.errors import ConfigError
from streams.settings import Settings
from streams.tools.runner import (
    DEMO_CLOCK,
    STATIC_AFTER,
    StackOptions,
    clock_text,
    given_variables,
    stack_settings,
    worker_env,
)

BROKER = "kafka://127.0.0.1:40001"
REDIS = "redis://127.0.0.1:40002/0"


def settings_for(environ: dict[str, str], **flags: object) -> Settings:
    options = StackOptions(**flags)  # type: ignore[arg-type]
    return stack_settings(options, environ, broker_url=BROKER, redis_url=REDIS)


def test_with_nothing_set_the_stack_uses_its_defaults():
    settings = settings_for({})

    assert settings.kafka_broker == BROKER
    assert settings.redis_url.get_secret_value() == REDIS
    assert settings.clock == "live"
    assert settings.clock_lateness == 0.0
    assert settings.partitions == 4
    assert settings.session_timeout == 3.0  # the stack's own
    assert settings.rebalance_timeout == 6.0


def test_every_crm_variable_of_the_environment_reaches_the_workers():
    environ = {
        "CRM_CLOCK": "replay",
        "CRM_CLOCK_LATENESS": "120",
        "CRM_ALLOWED_LATENESS": "86400",
        "CRM_MAX_CLOCK_SKEW": "0",
        "CRM_MERGE_IDLE": "5",
        "CRM_BATCH_MAX": "100",
        "CRM_SESSION_TIMEOUT": "20",
        "CRM_APP_ID": "mine",
        "CRM_TOPIC_ORDERS": "shop.orders",
        "CRM_PARTITIONS": "8",
        "CRM_LOG_LEVEL": "debug",
    }

    env = worker_env(settings_for(environ), 7001, Path("/tmp/w0"))

    for name, value in environ.items():
        assert Settings.from_env({name: value}) == Settings.from_env({name: env[name]}), name
    assert env["CRM_REBALANCE_TIMEOUT"] == "6.0"  # not given: the stack's default


def test_a_flag_wins_over_its_variable():
    environ = {
        "CRM_CLOCK": "live",
        "CRM_CLOCK_LATENESS": "60",
        "CRM_PARTITIONS": "8",
        "CRM_RULES_FILE": "/nowhere.toml",
    }

    settings = settings_for(
        environ, clock="replay", clock_lateness=900.0, partitions=2, rules_file=""
    )

    assert (settings.clock, settings.clock_lateness) == ("replay", 900.0)
    assert settings.partitions == 2
    assert settings.rules_file == ""


def test_a_flag_replaces_a_bad_variable_instead_of_failing_on_it():
    settings = settings_for(
        {"CRM_PARTITIONS": "four", "CRM_CLOCK": "sometimes"}, partitions=3, clock="live"
    )

    assert (settings.partitions, settings.clock) == (3, "live")


def test_what_the_stack_owns_is_the_stacks_whatever_the_environment_says():
    environ = {
        "KAFKA_BROKER": "kafka://prod:9092",
        "REDIS_URL": "not a url",  # not even read
        "CRM_WEB_PORT": "6066",
        "CRM_DATA_DIR": "/var/lib/crm",
    }

    settings = settings_for(environ)
    env = worker_env(settings, 7001, Path("/tmp/w0"))

    assert env["KAFKA_BROKER"] == BROKER
    assert env["REDIS_URL"] == REDIS
    assert env["CRM_WEB_PORT"] == "7001"
    assert env["CRM_DATA_DIR"] == "/tmp/w0"
    assert given_variables(StackOptions(), environ) == []


def test_production_credentials_do_not_reach_the_embedded_broker_and_redis():
    # Given a shell that still exports a production cluster's credentials
    environ = {
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "PLAIN",
        "KAFKA_SASL_USERNAME": "crm",
        "KAFKA_SASL_PASSWORD": "s3cret",
        "REDIS_USERNAME": "worker",
        "REDIS_PASSWORD": "p@ss",
    }

    env = worker_env(settings_for(environ), 7001, Path("/tmp/w0"))

    # Then the workers talk plain text to the stack's own loopback broker and Redis
    assert env["KAFKA_SECURITY_PROTOCOL"] == "PLAINTEXT"
    assert env["KAFKA_SASL_USERNAME"] == env["KAFKA_SASL_PASSWORD"] == ""
    assert env["REDIS_URL"] == REDIS
    assert env["REDIS_PASSWORD"] == ""
    assert given_variables(StackOptions(), environ) == []


def test_the_demo_runs_the_replay_clock_with_an_hour_of_lateness_unless_told_otherwise():
    demo = {"clock_default": DEMO_CLOCK}

    assert settings_for({}, **demo).clock == "replay"
    assert settings_for({}, **demo).clock_lateness == 3600.0
    # the lateness goes with the demo's clock ...
    assert settings_for({"CRM_CLOCK": "replay"}, **demo).clock_lateness == 3600.0
    # ... not with one the user picks
    live = settings_for({"CRM_CLOCK": "live"}, **demo)
    assert (live.clock, live.clock_lateness) == ("live", 0.0)
    assert settings_for({}, clock="live", **demo).clock_lateness == 0.0
    # and the user's lateness wins
    assert settings_for({"CRM_CLOCK_LATENESS": "60"}, **demo).clock_lateness == 60.0
    assert settings_for({}, clock_lateness=0.0, **demo).clock_lateness == 0.0


def test_up_takes_the_replay_clock_from_the_environment():
    """The bug this fixes: ``CRM_CLOCK=replay crmstream up`` ran the live clock."""
    settings = settings_for({"CRM_CLOCK": "replay"})

    assert worker_env(settings, 7001, Path("/tmp/w0"))["CRM_CLOCK"] == "replay"


@pytest.mark.parametrize(
    ("environ", "flags", "named"),
    [
        ({"CRM_CLOCK": "sometimes"}, {}, "CRM_CLOCK"),
        ({"CRM_CLOCK_LATENESS": "-1"}, {}, "CRM_CLOCK_LATENESS"),
        ({"CRM_ALLOWED_LATENESS": "soon"}, {}, "CRM_ALLOWED_LATENESS"),
        ({"CRM_PARTITIONS": "0"}, {}, "CRM_PARTITIONS"),
        ({}, {"clock_lateness": -5.0}, "--clock-lateness"),
        ({}, {"partitions": 0}, "--partitions"),
    ],
)
def test_a_bad_value_stops_it_naming_the_variable_or_flag(environ, flags, named):
    with pytest.raises(ConfigError) as refused:
        stack_settings(StackOptions(**flags), environ)  # before the stack starts: no URLs

    assert refused.value.key == named


def test_the_banner_lists_the_variables_taken_from_the_environment_by_name():
    environ = {
        "CRM_CLOCK": "replay",
        "CRM_ALLOWED_LATENESS": "3600",
        "KAFKA_SASL_PASSWORD": "s3cret",
        "CRM_PARTITIONS": "8",
        "KAFKA_BROKER": "kafka://prod:9092",
        "HOME": "/root",
        "CRM_BATCH_MAX": "",
    }

    names = given_variables(StackOptions(partitions=2), environ)

    assert names == ["CRM_ALLOWED_LATENESS", "CRM_CLOCK"]  # names only, never values


def test_the_clock_is_described_with_its_mode_and_lateness():
    assert clock_text(Settings(clock="replay", clock_lateness=3600.0)).startswith(
        "replay (timers fire on event time, 1 hour behind"
    )
    assert clock_text(Settings()).startswith("live (timers fire on the wall clock once")


def test_a_lone_worker_with_a_long_session_is_a_static_member_and_several_are_dynamic():
    # Tansu 0.6 mishandles static members rebalancing among themselves (worker_env)
    settings = settings_for({"CRM_SESSION_TIMEOUT": "6"})

    lone = worker_env(settings, 7001, Path("/tmp/w0"), 0, workers=1)
    pair = [worker_env(settings, 7001 + i, Path(f"/tmp/w{i}"), i, workers=2) for i in (0, 1)]
    unnamed = worker_env(settings, 7001, Path("/tmp/w0"))

    assert lone["CRM_GROUP_INSTANCE_ID"] == "crmstream-worker-0"
    assert all(env.get("CRM_GROUP_INSTANCE_ID", "") == "" for env in (*pair, unnamed))


@pytest.mark.parametrize("session", [None, "3", "2"])
def test_at_the_stacks_short_session_a_lone_worker_is_a_dynamic_member(session: str | None):
    # The embedded broker holds a static member's join and sync 3 s each, a dynamic
    # member's join half its session: dynamic restarts faster there (STATIC_AFTER)
    settings = settings_for({} if session is None else {"CRM_SESSION_TIMEOUT": session})

    lone = worker_env(settings, 7001, Path("/tmp/w0"), 0, workers=1)

    assert settings.session_timeout <= STATIC_AFTER
    assert lone.get("CRM_GROUP_INSTANCE_ID", "") == ""


@pytest.mark.parametrize("command", ["up", "demo"])
def test_the_stacks_help_says_what_it_owns_and_that_credentials_do_not_pass(
    command: str, capsys: pytest.CaptureFixture[str]
):
    """`crmstream up --help` told users the KAFKA_* / REDIS_* security variables pass
    through to the workers; the stack drops them (STACK_OWNED), as the README says."""
    from streams.tools.cli import main

    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "security variables pass through" not in text
    assert "KAFKA_* / REDIS_* security variables are not passed" in text
    for owned in ("KAFKA_BROKER", "REDIS_URL", "CRM_WEB_PORT", "CRM_DATA_DIR"):
        assert owned in text
