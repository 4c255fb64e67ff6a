"""Settings as pydantic-settings models: one declaration per setting, secrets that never
show, and errors that name the variable in one line, as clear as before (issue 13)."""

from __future__ import annotations

import re
from pathlib import Path

import pydantic
import pytest

from schemas.errors import ConfigError
from streams.settings import Env, Settings, Topics

SECRET = "hunter2-Zx9"


def _error(environ: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(environ)
    return caught.value


# --- secrets --------------------------------------------------------------------------

SECRET_ENVIRONMENTS = {
    "sasl password": {
        Env.KAFKA_SECURITY_PROTOCOL: "SASL_PLAINTEXT",
        Env.KAFKA_SASL_USERNAME: "crm",
        Env.KAFKA_SASL_PASSWORD: SECRET,
    },
    "key password": {Env.KAFKA_SSL_KEY_PASSWORD: SECRET},
    "redis password": {Env.REDIS_PASSWORD: SECRET},
    "password in REDIS_URL": {Env.REDIS_URL: f"redis://crm:{SECRET}@cache:6379/0"},
}


@pytest.mark.parametrize("environ", SECRET_ENVIRONMENTS.values(), ids=SECRET_ENVIRONMENTS)
def test_a_secret_never_shows_in_the_settings_repr_or_str(environ):
    settings = Settings.from_env(environ)

    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
    assert SECRET not in str(settings.as_env(redacted=True))
    assert SECRET not in settings.redis_url_shown


@pytest.mark.parametrize("environ", SECRET_ENVIRONMENTS.values(), ids=SECRET_ENVIRONMENTS)
def test_a_secret_reaches_the_child_process_environment(environ):
    settings = Settings.from_env(environ)

    again = Settings.from_env(settings.as_env())

    assert again == settings
    assert SECRET in str(settings.as_env())  # the child needs it: never print as_env()


def test_secrets_are_unwrapped_only_for_the_clients():
    settings = Settings.from_env(SECRET_ENVIRONMENTS["sasl password"] | {Env.REDIS_PASSWORD: "r"})

    assert isinstance(settings.kafka_sasl_password, pydantic.SecretStr)
    assert isinstance(settings.redis_url, pydantic.SecretStr)
    assert settings.kafka_client_options()["sasl_plain_password"] == SECRET
    assert settings.broker_credentials().password == SECRET


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        # a bad URL that carries a password
        ({Env.REDIS_URL: f"http://crm:{SECRET}@cache:6379"}, Env.REDIS_URL),
        # a password given twice, differently
        (
            {Env.REDIS_URL: "redis://:other@cache:6379/0", Env.REDIS_PASSWORD: SECRET},
            "REDIS_PASSWORD",
        ),
        # a secret where it does not belong
        (
            {Env.KAFKA_SASL_USERNAME: "crm", Env.KAFKA_SASL_PASSWORD: SECRET},
            "KAFKA_SECURITY_PROTOCOL",
        ),
        # another setting wrong while the secrets are set
        ({Env.REDIS_PASSWORD: SECRET, Env.PARTITIONS: "0"}, Env.PARTITIONS),
        ({Env.KAFKA_SSL_KEY_PASSWORD: SECRET, Env.TOPIC_DLQ: "crm.orders"}, "CRM_TOPIC_*"),
    ],
)
def test_a_secret_never_shows_in_an_error(environ, key):
    error = _error(environ)

    assert error.key == key
    assert SECRET not in str(error)
    assert SECRET not in repr(error)


def test_a_wrong_secret_passed_to_the_constructor_does_not_show_its_value():
    with pytest.raises(ConfigError) as caught:
        Settings(kafka_sasl_password=["not", "text", SECRET])  # type: ignore[arg-type]

    assert caught.value.key == Env.KAFKA_SASL_PASSWORD
    assert SECRET not in str(caught.value)


def test_the_redis_url_shown_to_a_person_masks_only_the_password():
    settings = Settings.from_env(
        {Env.REDIS_URL: "rediss://cache:6380/2", Env.REDIS_PASSWORD: SECRET}
    )

    assert settings.redis_url_shown == "rediss://:***@cache:6380/2"
    assert Settings().redis_url_shown == "redis://127.0.0.1:6379/0"
    assert settings.as_env(redacted=True)[Env.REDIS_URL] == "rediss://:***@cache:6380/2"


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({Env.PARTITIONS: "0"}, "CRM_PARTITIONS': must be at least 1 (got '0')"),
        ({Env.PARTITIONS: "four"}, "CRM_PARTITIONS': expected an integer (got 'four')"),
        ({Env.MERGE_IDLE: "4000"}, "CRM_MERGE_IDLE': must be between 0 and 3600 seconds"),
        (
            {Env.CLOCK: "sometimes"},
            "CRM_CLOCK': must be one of 'live' or 'replay' (got 'sometimes')",
        ),
        ({Env.CHANGELOG_SEAL: "maybe"}, "expected 1/0 (true/false, yes/no, on/off) (got 'maybe')"),
        ({Env.ALLOWED_LATENESS: "inf"}, "CRM_ALLOWED_LATENESS': expected a finite number"),
    ],
)
def test_an_error_is_one_line_naming_the_variable_and_the_value_given(environ, message):
    error = _error(environ)

    assert message in str(error)
    assert "\n" not in str(error)
    assert "pydantic" not in str(error)
    assert "Input should" not in str(error)


def test_a_setting_the_constructor_does_not_know_is_refused_by_name():
    with pytest.raises(ConfigError) as caught:
        Settings(partitons=8)  # type: ignore[call-arg]

    assert caught.value.key == "partitons"
    assert "is not a setting" in caught.value.problem


def test_the_constructor_checks_values_as_the_environment_does():
    with pytest.raises(ConfigError) as caught:
        Settings(partitions=0)

    assert caught.value.key == Env.PARTITIONS


def test_a_wrong_topic_name_names_its_variable():
    with pytest.raises(ConfigError) as caught:
        Settings(topics={"orders": ""})  # type: ignore[arg-type]

    assert caught.value.key == Env.TOPIC_ORDERS


def test_replace_checks_the_new_values_and_keeps_the_rest():
    settings = Settings(partitions=8)

    assert settings.replace(batch_max=10).partitions == 8
    assert settings.replace(batch_max=10).batch_max == 10
    assert settings.batch_max == 16000
    with pytest.raises(ConfigError) as caught:
        settings.replace(min_insync_replicas=2)
    assert caught.value.key == Env.MIN_INSYNC_REPLICAS


# --- where the values come from ---------------------------------------------------------


def test_the_constructor_reads_no_environment(monkeypatch):
    monkeypatch.setenv(Env.PARTITIONS, "9")
    monkeypatch.setenv(Env.KAFKA_BROKER, "kafka://elsewhere:9092")
    monkeypatch.setenv(Env.TOPIC_ORDERS, "elsewhere.orders")

    assert Settings().partitions == 4
    assert Settings().kafka_broker == "kafka://127.0.0.1:9092"
    assert Settings().topics == Topics()


def test_variable_names_are_exact():
    settings = Settings.from_env({"crm_partitions": "9", "kafka_broker": "kafka://x:1"})

    assert settings == Settings()


def test_a_switch_reads_as_before_whitespace_and_case_included():
    assert Settings.from_env({Env.CHANGELOG_SEAL: " Off "}).changelog_seal is False
    assert Settings.from_env({Env.CHANGELOG_SEAL: "YES"}).changelog_seal is True


def test_every_setting_is_declared_with_a_description_for_the_docs():
    undescribed = [
        name
        for model in (Settings, Topics)
        for name, info in model.model_fields.items()
        if not info.description
    ]

    assert not undescribed


def test_every_variable_of_env_is_a_setting_or_folded_into_the_redis_url():
    declared = {v for k, v in vars(Env).items() if k.isupper()}
    folded = {Env.REDIS_USERNAME, Env.REDIS_PASSWORD, Env.REDIS_SSL_CA_FILE}
    folded |= {Env.REDIS_SSL_CERT_FILE, Env.REDIS_SSL_KEY_FILE}

    variables = set(Settings.variables().values()) | set(Topics.variables().values())

    assert variables == declared - folded


def test_replace_works_after_the_topic_lookups_were_used():
    # Given settings whose topic lookups have been used (their caches filled)
    settings = Settings()
    assert settings.topics.family_of("crm.orders") == "orders"
    assert settings.topics.by_family["orders"] == "crm.orders"

    # When a copy is made with a change
    changed = settings.replace(partitions=2)
    topics = settings.topics.replace(orders="shop.orders")

    # Then the copies are checked and made as from fresh settings
    assert changed.topics == settings.topics
    assert changed.topics.family_of("crm.orders") == "orders"
    assert topics.family_of("shop.orders") == "orders"
    assert topics.family_of("crm.orders") is None


def test_a_pydantic_copy_with_changes_does_not_keep_the_old_topic_lookups():
    # Given topics whose lookups have been used (their caches filled)
    topics = Settings().topics
    assert topics.by_family["orders"] == "crm.orders"
    assert topics.family_of("crm.orders") == "orders"

    # When pydantic's own copy is made with a change (as a test helper and a bench did)
    copied = topics.model_copy(update={"orders": "shop.orders"})

    # Then the copy's lookups name its topics, and the original keeps its own
    assert copied.by_family["orders"] == "shop.orders"
    assert "shop.orders" in copied.inputs and "crm.orders" not in copied.inputs
    assert copied.family_of("shop.orders") == "orders"
    assert copied.family_of("crm.orders") is None
    assert topics.by_family["orders"] == "crm.orders"


# --- the README ---------------------------------------------------------------------------

README = Path(__file__).resolve().parents[2] / "README.md"


def _configuration_table() -> dict[str, str]:
    """Variable -> default, from the README's "Configuration" table (one-variable rows)."""
    text = README.read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([A-Z_]+)` \| `([^`]*)`", section, flags=re.MULTILINE)
    return dict(rows)


def test_the_readme_gives_the_defaults_the_settings_have():
    table = _configuration_table()

    assert len(table) >= 20
    for variable, default in table.items():
        assert Settings.from_env({variable: default}) == Settings(), variable


def test_the_readme_names_every_variable():
    text = README.read_text()
    tests_only = {Env.FAILPOINTS}

    missing = {v for v in Settings.variables().values() if f"`{v}`" not in text} - tests_only

    assert not missing
