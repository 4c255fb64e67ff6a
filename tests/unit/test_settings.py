"""Runtime settings: read once from an environment mapping, validated, reproducible."""

from __future__ import annotations

import re

import pydantic
import pytest

from schemas.errors import ConfigError
from streams.settings import Env, Settings, Topics


def test_empty_environment_gives_the_defaults():
    settings = Settings.from_env({})

    assert settings == Settings()
    assert settings.kafka_broker == "kafka://127.0.0.1:9092"
    assert settings.partitions == 4
    assert settings.topics.orders == "crm.orders"


def test_given_mapping_is_read_instead_of_the_process_environment(monkeypatch):
    monkeypatch.setenv(Env.PARTITIONS, "9")

    assert Settings.from_env({}).partitions == 4
    assert Settings.from_env().partitions == 9


def test_environment_values_are_coerced_to_the_setting_type():
    settings = Settings.from_env(
        {
            Env.PARTITIONS: "8",
            Env.WEB_PORT: "7000",
            Env.ALLOWED_LATENESS: "3600",
            Env.SESSION_TIMEOUT: "45",
            Env.REDIS_URL: "rediss://cache:6380/2",
            Env.STORE: "rocksdb://",
            Env.RULES_FILE: "/etc/crm/rules.toml",
        }
    )

    assert settings.partitions == 8
    assert settings.web_port == 7000
    assert settings.allowed_lateness == 3600.0
    assert settings.session_timeout == 45.0
    assert isinstance(settings.session_timeout, float)
    assert settings.redis_url.get_secret_value() == "rediss://cache:6380/2"
    assert settings.store == "rocksdb://"
    assert settings.rules_file == "/etc/crm/rules.toml"


def test_empty_variable_keeps_the_default():
    settings = Settings.from_env({Env.PARTITIONS: "", Env.TOPIC_ORDERS: ""})

    assert settings.partitions == 4
    assert settings.topics.orders == "crm.orders"


def test_topic_names_come_from_their_variables():
    settings = Settings.from_env({Env.TOPIC_ORDERS: "shop.orders", Env.TOPIC_DLQ: "shop.dlq"})

    assert settings.topics.orders == "shop.orders"
    assert settings.topics.dlq == "shop.dlq"
    assert settings.topics.browsing == "crm.browsing"
    assert settings.topics.family_of("shop.orders") == "orders"
    assert settings.topics.family_of("crm.orders") is None


@pytest.mark.parametrize(
    ("variable", "raw", "problem"),
    [
        (Env.PARTITIONS, "four", "expected an integer"),
        (Env.PARTITIONS, "0", "must be at least 1"),
        (Env.WEB_PORT, "70000", "must be a TCP port"),
        (Env.WEB_PORT, "0", "must be a TCP port"),
        (Env.BATCH_MAX, "0", "must be at least 1"),
        (Env.BATCH_MAX, "1.5", "expected an integer"),
        (Env.ALLOWED_LATENESS, "0", "must be between 60 s"),
        (Env.ALLOWED_LATENESS, "soon", "expected a number"),
        (Env.MAX_CLOCK_SKEW, "-1", "must be between 0 and 30 days"),
        (Env.MERGE_IDLE, "4000", "must be between 0 and 3600"),
        (Env.LEDGER_TTL_DAYS, "0", "must be at least 1 day"),
        (Env.STORE, "redis://", "must be memory:// or rocksdb://"),
        (Env.REDIS_URL, "http://cache:6379", "must be a redis://"),
    ],
)
def test_wrong_variable_is_a_config_error_naming_it(variable, raw, problem):
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({variable: raw})

    assert raised.value.key == variable
    assert problem in raised.value.problem


def test_two_topics_with_one_name_is_a_config_error():
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({Env.TOPIC_ACTIONS: "crm.orders"})

    assert raised.value.key == "CRM_TOPIC_*"


def test_default_settings_survive_the_as_env_round_trip():
    settings = Settings()

    assert Settings.from_env(settings.as_env()) == settings


def test_changed_settings_survive_the_as_env_round_trip():
    # Given settings that differ from the defaults everywhere it matters
    settings = Settings().replace(
        kafka_broker="kafka://broker-a:9092;kafka://broker-b:9092",
        redis_url="unix:///run/redis.sock",
        partitions=12,
        allowed_lateness=7200.0,
        session_timeout=12.5,
        rules_file="/srv/rules.toml",
        topics=Topics(orders="o", browsing="b", actions="a"),
    )

    # When they go through a child process's environment
    env = settings.as_env()

    # Then every value comes back, and every variable is a string
    assert all(isinstance(v, str) for v in env.values())
    assert env[Env.PARTITIONS] == "12"
    assert Settings.from_env(env) == settings


def test_as_env_names_only_declared_variables():
    declared = {v for k, v in vars(Env).items() if not k.startswith("_")}

    assert set(Settings().as_env()) == declared


@pytest.mark.parametrize(
    ("broker", "bootstrap"),
    [
        ("kafka://127.0.0.1:9092", "127.0.0.1:9092"),
        ("kafka://a:9092;kafka://b:9093", "a:9092,b:9093"),
        ("kafka://a:9092;", "a:9092"),
        ("localhost:29092", "localhost:29092"),
    ],
)
def test_broker_bootstrap_drops_the_scheme_for_aiokafka(broker, bootstrap):
    settings = Settings.from_env({Env.KAFKA_BROKER: broker})

    assert settings.broker_bootstrap == bootstrap


def test_settings_are_frozen():
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        Settings().partitions = 1  # type: ignore[misc]


def test_not_a_number_lateness_is_a_config_error():
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({Env.ALLOWED_LATENESS: "nan"})

    assert raised.value.key == Env.ALLOWED_LATENESS


def test_negative_session_timeout_is_a_config_error():
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({Env.SESSION_TIMEOUT: "-5"})

    assert raised.value.key == Env.SESSION_TIMEOUT


def test_input_topics_follow_their_configured_names():
    topics = Topics(orders="shop.orders")

    assert topics.inputs == (
        "shop.orders",
        "crm.browsing",
        "crm.reviews",
        "crm.complaints",
        "crm.customers",
        "crm.commands",
        "crm.action-outcomes",
    )
    assert topics.by_family["orders"] == "shop.orders"
    assert topics.family_of("shop.orders") == "orders"
    assert topics.family_of("crm.actions") is None


def test_the_merges_waits_default_by_the_fetch_wait_and_the_clock():
    live, replay = Settings(clock="live"), Settings(clock="replay")
    assert live.merge_grace_seconds == pytest.approx(live.fetch_wait + 0.1)
    assert Settings(fetch_wait=0.5).merge_grace_seconds == pytest.approx(0.6)
    assert Settings(merge_grace=0.25).merge_grace_seconds == 0.25
    assert (live.merge_idle_seconds, replay.merge_idle_seconds) == (2.0, 30.0)
    assert Settings(clock="replay", merge_idle=7).merge_idle_seconds == 7


def test_proposals_are_promised_on_the_replay_clock_with_a_lookahead_only():
    assert Settings(clock="replay").proposals_promised
    assert not Settings(clock="live").proposals_promised
    assert not Settings(clock="replay", proposal_lookahead=0).proposals_promised


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({Env.ASSIGNMENT_TIMEOUT: "4.9"}, "must be 0 (never) or 5 to 3600 seconds"),
        ({Env.STATE_PACKING: "10", Env.STATE_DICTIONARY: "1"}, "must be 0 or 1 to 9 with"),
    ],
)
def test_a_value_between_bounds_that_cannot_work_is_refused_naming_the_range(env, problem):
    with pytest.raises(ConfigError, match=re.escape(problem)):
        Settings.from_env(env)


@pytest.mark.parametrize(
    "env",
    [
        {Env.ASSIGNMENT_TIMEOUT: "0"},
        {Env.ASSIGNMENT_TIMEOUT: "5"},
        {Env.STATE_PACKING: "9", Env.STATE_DICTIONARY: "1"},
        {Env.STATE_PACKING: "0", Env.STATE_DICTIONARY: "1"},
    ],
)
def test_values_at_those_ranges_ends_are_taken(env):
    Settings.from_env(env)
