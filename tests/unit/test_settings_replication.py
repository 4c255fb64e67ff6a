"""Replication, standby replicas and the assignment timeout: settings read once, validated,
and passed to the topics crmstream and faust create."""

from __future__ import annotations

import pytest

from schemas.errors import ConfigError
from streams.settings import Env, Settings


def test_the_defaults_fit_the_single_node_embedded_broker():
    settings = Settings.from_env({})

    assert settings.replication_factor == 1
    assert settings.min_insync_replicas == 1
    assert settings.standby_replicas == 0
    assert settings.topic_config() == {"min.insync.replicas": "1"}


def test_production_values_come_from_their_variables():
    settings = Settings.from_env(
        {
            Env.REPLICATION_FACTOR: "3",
            Env.MIN_INSYNC_REPLICAS: "2",
            Env.STANDBY_REPLICAS: "1",
        }
    )

    assert (settings.replication_factor, settings.min_insync_replicas) == (3, 2)
    assert settings.standby_replicas == 1
    assert settings.topic_config() == {"min.insync.replicas": "2"}


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({Env.REPLICATION_FACTOR: "0"}, Env.REPLICATION_FACTOR),
        ({Env.REPLICATION_FACTOR: "three"}, Env.REPLICATION_FACTOR),
        ({Env.MIN_INSYNC_REPLICAS: "2"}, Env.MIN_INSYNC_REPLICAS),  # more than 1 replica
        ({Env.REPLICATION_FACTOR: "3", Env.MIN_INSYNC_REPLICAS: "4"}, Env.MIN_INSYNC_REPLICAS),
        ({Env.MIN_INSYNC_REPLICAS: "0"}, Env.MIN_INSYNC_REPLICAS),
        ({Env.STANDBY_REPLICAS: "-1"}, Env.STANDBY_REPLICAS),
        ({Env.ASSIGNMENT_TIMEOUT: "2"}, Env.ASSIGNMENT_TIMEOUT),
        ({Env.ASSIGNMENT_TIMEOUT: "-5"}, Env.ASSIGNMENT_TIMEOUT),
    ],
)
def test_a_wrong_value_names_its_variable(environ, variable):
    with pytest.raises(ConfigError) as error:
        Settings.from_env(environ)

    assert error.value.key == variable


def test_the_new_settings_survive_the_as_env_round_trip():
    settings = Settings.from_env(
        {
            Env.REPLICATION_FACTOR: "3",
            Env.MIN_INSYNC_REPLICAS: "2",
            Env.STANDBY_REPLICAS: "1",
            Env.ASSIGNMENT_TIMEOUT: "90",
        }
    )

    assert Settings.from_env(settings.as_env()) == settings


def test_the_assignment_limit_is_never_shorter_than_a_rebalance_may_take():
    assert Settings(assignment_timeout=60, rebalance_timeout=30).assignment_limit == 60
    assert Settings(assignment_timeout=10, rebalance_timeout=30).assignment_limit == 30
    assert Settings(assignment_timeout=0).assignment_limit == 0  # never rejoin


def test_faust_creates_its_topics_and_standbys_with_these_settings():
    from agents.rules import Rules
    from streams.app import create_app

    settings = Settings(replication_factor=3, min_insync_replicas=2, standby_replicas=1)
    rt = create_app(settings, Rules())

    assert rt.app.conf.topic_replication_factor == 3
    assert rt.app.conf.table_standby_replicas == 1
    for table in (rt.customers, rt.aggregates):
        assert table.changelog_topic.config == {"min.insync.replicas": "2"}


@pytest.mark.parametrize(
    ("code", "says"),
    [
        (38, "crm.orders: the cluster has fewer brokers than CRM_REPLICATION_FACTOR=3"),
        (40, "crm.orders: the broker refused min.insync.replicas=2 (CRM_MIN_INSYNC_REPLICAS)"),
        (29, "crm.orders: error code 29"),  # any other: Kafka's own code, to look up
    ],
)
def test_a_refused_topic_names_the_setting_to_change(code, says):
    from streams.topics import INVALID_CONFIG, INVALID_REPLICATION_FACTOR, creation_error

    assert (INVALID_REPLICATION_FACTOR, INVALID_CONFIG) == (38, 40)  # Kafka's error codes
    settings = Settings(replication_factor=3, min_insync_replicas=2)

    assert creation_error(settings, "crm.orders", code) == f"could not create topic {says}"


@pytest.mark.parametrize(
    ("raw", "sealed"), [("0", False), ("off", False), ("False", False), ("1", True), ("yes", True)]
)
def test_the_changelog_seal_is_on_for_the_embedded_broker_and_can_be_turned_off(raw, sealed):
    assert Settings.from_env({}).changelog_seal is True
    settings = Settings.from_env({Env.CHANGELOG_SEAL: raw})

    assert settings.changelog_seal is sealed
    assert Settings.from_env(settings.as_env()).changelog_seal is sealed


def test_a_seal_value_that_is_not_a_yes_or_no_names_its_variable():
    with pytest.raises(ConfigError) as err:
        Settings.from_env({Env.CHANGELOG_SEAL: "maybe"})

    assert err.value.key == Env.CHANGELOG_SEAL


def test_every_setting_has_its_variable_named_in_env_and_back():
    from streams.settings import _ENV_OF

    declared = {v for k, v in vars(Env).items() if k.isupper()}
    topics = {v for v in declared if v.startswith("CRM_TOPIC_")}
    folded_into_redis_url = {v for v in declared if v.startswith("REDIS_") and v != "REDIS_URL"}

    assert set(_ENV_OF.values()) == declared - topics - folded_into_redis_url


def test_topics_on_an_unreachable_broker_are_given_up_after_the_timeout_with_one_notice(
    capsys,
):
    """Creating the topics tries the broker every half second until the timeout, says so
    once on stderr (not once per try), then names the address and the variable."""
    import asyncio
    import time

    from schemas.errors import BrokerUnreachable
    from streams.tools.embedded import free_port
    from streams.topics import ensure_topics

    port = free_port()  # closed again: nothing listens there
    settings = Settings(kafka_broker=f"kafka://127.0.0.1:{port}")

    started = time.monotonic()
    with pytest.raises(BrokerUnreachable) as refused:
        asyncio.run(ensure_topics(settings, timeout=1.2))
    took = time.monotonic() - started

    assert str(refused.value) == (
        f"cannot reach the Kafka broker at 127.0.0.1:{port} after 1s (set KAFKA_BROKER)"
    )
    assert 1.2 <= took < 10
    assert capsys.readouterr().err == (
        f"crmstream: waiting for the broker at 127.0.0.1:{port} ...\n"
    )
