"""Kafka (SASL/SCRAM, TLS) and Redis (ACL user, password, TLS) security settings."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import faust
import pytest
import redis.asyncio as aioredis

from schemas.errors import ConfigError
from streams.settings import Env, Settings


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed CA certificate and a client certificate/key pair (openssl)."""
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "client.key", folder / "client.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=crmstream-test", "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return {"ca": cert, "cert": cert, "key": key}


def _error(env: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    return caught.value


# --- Kafka --------------------------------------------------------------------


def test_plaintext_is_the_default_and_adds_no_client_options():
    settings = Settings.from_env({})

    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert settings.kafka_client_options() == {}
    assert settings.broker_credentials() is None
    assert settings.kafka_ssl_context() is None


def test_sasl_scram_over_tls_gives_faust_and_aiokafka_the_same_credentials(tls_files):
    settings = Settings.from_env(
        {
            Env.KAFKA_SECURITY_PROTOCOL: "SASL_SSL",
            Env.KAFKA_SASL_MECHANISM: "SCRAM-SHA-256",
            Env.KAFKA_SASL_USERNAME: "crm-worker",
            Env.KAFKA_SASL_PASSWORD: "s3cret",
            Env.KAFKA_SSL_CA_FILE: str(tls_files["ca"]),
        }
    )

    options = settings.kafka_client_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert options["sasl_plain_username"] == "crm-worker"
    assert options["sasl_plain_password"] == "s3cret"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    credentials = settings.broker_credentials()
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.mechanism.value == "SCRAM-SHA-256"
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.username == "crm-worker"
    assert "s3cret" not in repr(settings)


def test_sasl_without_tls_uses_no_ssl_context():
    settings = Settings.from_env(
        {
            Env.KAFKA_SECURITY_PROTOCOL: "SASL_PLAINTEXT",
            Env.KAFKA_SASL_USERNAME: "u",
            Env.KAFKA_SASL_PASSWORD: "p",
        }
    )

    assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512"  # the default mechanism
    assert "ssl_context" not in settings.kafka_client_options()
    credentials = settings.broker_credentials()
    assert credentials.protocol.value == "SASL_PLAINTEXT"
    assert credentials.mechanism.value == "SCRAM-SHA-512"


def test_tls_with_a_client_certificate(tls_files):
    settings = Settings.from_env(
        {
            Env.KAFKA_SECURITY_PROTOCOL: "SSL",
            Env.KAFKA_SSL_CA_FILE: str(tls_files["ca"]),
            Env.KAFKA_SSL_CERT_FILE: str(tls_files["cert"]),
            Env.KAFKA_SSL_KEY_FILE: str(tls_files["key"]),
        }
    )

    assert settings.kafka_client_options()["security_protocol"] == "SSL"
    credentials = settings.broker_credentials()
    assert isinstance(credentials, faust.SSLCredentials)
    assert isinstance(credentials.context, ssl.SSLContext)


@pytest.mark.parametrize(
    ("env", "key", "words"),
    [
        ({Env.KAFKA_SECURITY_PROTOCOL: "TLS"}, Env.KAFKA_SECURITY_PROTOCOL, "must be one of"),
        (
            {Env.KAFKA_SECURITY_PROTOCOL: "SASL_SSL", Env.KAFKA_SASL_PASSWORD: "p"},
            Env.KAFKA_SASL_USERNAME,
            "is required with SASL_SSL",
        ),
        (
            {Env.KAFKA_SECURITY_PROTOCOL: "SASL_SSL", Env.KAFKA_SASL_USERNAME: "u"},
            Env.KAFKA_SASL_PASSWORD,
            "is required",
        ),
        (
            {
                Env.KAFKA_SECURITY_PROTOCOL: "SASL_SSL",
                Env.KAFKA_SASL_MECHANISM: "SCRAM-SHA-1",
                Env.KAFKA_SASL_USERNAME: "u",
                Env.KAFKA_SASL_PASSWORD: "p",
            },
            Env.KAFKA_SASL_MECHANISM,
            "SCRAM-SHA-256",
        ),
        (
            {Env.KAFKA_SASL_USERNAME: "u", Env.KAFKA_SASL_PASSWORD: "p"},
            Env.KAFKA_SECURITY_PROTOCOL,
            "SASL credentials are set",
        ),
        ({Env.KAFKA_SASL_USERNAME: "u"}, Env.KAFKA_SECURITY_PROTOCOL, "SASL credentials are set"),
        ({Env.KAFKA_SASL_PASSWORD: "p"}, Env.KAFKA_SECURITY_PROTOCOL, "SASL credentials are set"),
        (
            {Env.KAFKA_SSL_CA_FILE: "/etc/hosts"},
            Env.KAFKA_SSL_CA_FILE,
            "no TLS",
        ),
        (
            {Env.KAFKA_SECURITY_PROTOCOL: "SSL", Env.KAFKA_SSL_CA_FILE: "/nonexistent/ca.pem"},
            Env.KAFKA_SSL_CA_FILE,
            "no such file",
        ),
    ],
)
def test_bad_kafka_security_names_the_variable(env, key, words):
    error = _error(env)

    assert error.key == key
    assert words in error.problem


def test_client_certificate_needs_its_key(tls_files):
    error = _error(
        {Env.KAFKA_SECURITY_PROTOCOL: "SSL", Env.KAFKA_SSL_CERT_FILE: str(tls_files["cert"])}
    )

    assert error.key == Env.KAFKA_SSL_KEY_FILE


# --- Redis --------------------------------------------------------------------


def _redis_kwargs(url: str) -> dict[str, object]:
    """What redis-py makes of a URL (no connection is opened)."""
    client = aioredis.Redis.from_url(url)
    return dict(client.connection_pool.connection_kwargs)


def test_redis_acl_user_and_password_are_folded_into_the_url():
    settings = Settings.from_env(
        {
            Env.REDIS_URL: "redis://cache:6379/1",
            Env.REDIS_USERNAME: "crm",
            Env.REDIS_PASSWORD: "p@ss:w/rd",
        }
    )

    kwargs = _redis_kwargs(settings.redis_url.get_secret_value())
    assert kwargs["username"] == "crm"
    assert kwargs["password"] == "p@ss:w/rd"
    assert kwargs["host"] == "cache" and kwargs["db"] == 1
    assert "p@ss" not in repr(settings)


def test_redis_password_alone_uses_the_default_user():
    settings = Settings.from_env({Env.REDIS_URL: "redis://cache:6379/0", Env.REDIS_PASSWORD: "pw"})

    kwargs = _redis_kwargs(settings.redis_url.get_secret_value())
    assert kwargs["password"] == "pw"
    assert kwargs.get("username") in (None, "")


def test_redis_tls_files_reach_the_client(tls_files):
    settings = Settings.from_env(
        {
            Env.REDIS_URL: "rediss://cache:6380/0",
            Env.REDIS_PASSWORD: "pw",
            Env.REDIS_SSL_CA_FILE: str(tls_files["ca"]),
            Env.REDIS_SSL_CERT_FILE: str(tls_files["cert"]),
            Env.REDIS_SSL_KEY_FILE: str(tls_files["key"]),
        }
    )

    kwargs = _redis_kwargs(settings.redis_url.get_secret_value())
    assert kwargs["ssl_ca_certs"] == str(tls_files["ca"])
    assert kwargs["ssl_certfile"] == str(tls_files["cert"])
    assert kwargs["ssl_keyfile"] == str(tls_files["key"])
    query = parse_qs(urlsplit(settings.redis_url.get_secret_value()).query)
    assert query["ssl_ca_certs"] == [str(tls_files["ca"])]


def test_folding_is_idempotent_so_child_processes_read_the_same_settings(tls_files):
    env = {
        Env.REDIS_URL: "rediss://cache:6380/0",
        Env.REDIS_USERNAME: "crm",
        Env.REDIS_PASSWORD: "pw",
        Env.REDIS_SSL_CA_FILE: str(tls_files["ca"]),
    }
    settings = Settings.from_env(env)

    again = Settings.from_env(
        settings.as_env() | {k: v for k, v in env.items() if k != "REDIS_URL"}
    )

    assert again.redis_url == settings.redis_url
    assert Settings.from_env(settings.as_env()) == settings


@pytest.mark.parametrize(
    ("env", "key", "words"),
    [
        ({Env.REDIS_USERNAME: "crm"}, Env.REDIS_PASSWORD, "REDIS_USERNAME"),
        (
            {Env.REDIS_URL: "redis://:one@cache:6379/0", Env.REDIS_PASSWORD: "two"},
            Env.REDIS_PASSWORD,
            "different password",
        ),
        (
            {Env.REDIS_URL: "redis://cache:6379/0", Env.REDIS_SSL_CA_FILE: "/etc/hosts"},
            Env.REDIS_SSL_CA_FILE,
            "rediss://",
        ),
        (
            {Env.REDIS_URL: "rediss://cache:6380/0", Env.REDIS_SSL_CA_FILE: "/nope/ca.pem"},
            Env.REDIS_SSL_CA_FILE,
            "no such file",
        ),
        ({Env.REDIS_URL: "http://cache"}, Env.REDIS_URL, "redis://"),
    ],
)
def test_bad_redis_security_names_the_variable(env, key, words):
    error = _error(env)

    assert error.key == key
    assert words in error.problem


def test_redis_client_certificate_needs_its_key(tls_files):
    error = _error(
        {Env.REDIS_URL: "rediss://cache:6380/0", Env.REDIS_SSL_CERT_FILE: str(tls_files["cert"])}
    )

    assert error.key == Env.REDIS_SSL_KEY_FILE


def test_ops_sample_interval_is_checked():
    assert Settings.from_env({Env.OPS_SAMPLE_INTERVAL: "2"}).ops_sample_interval == 2.0
    assert _error({Env.OPS_SAMPLE_INTERVAL: "0"}).key == Env.OPS_SAMPLE_INTERVAL
