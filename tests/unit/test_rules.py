"""Domain rules: domain.md's defaults, overridable from TOML, wrong files named clearly."""

from __future__ import annotations

import dataclasses

import pytest

from streams.errors import ConfigError, CrmStreamError
from streams.rules import Rules


def test_defaults_are_the_handbooks_examples():
    rules = Rules()

    assert rules.welcome.enabled is True
    assert rules.welcome.channel == "email"
    assert rules.welcome.template_id == "welcome_first_order"
    assert rules.welcome.expires_after_days == 30
    assert rules.lifecycle.active_window_days == 30
    assert rules.lifecycle.active_min_orders == 2
    assert rules.state.dedupe_window == 64


@pytest.mark.parametrize("path", [None, ""])
def test_no_rules_file_gives_the_defaults(path):
    assert Rules.load(path) == Rules()


def test_empty_mapping_gives_the_defaults():
    assert Rules.from_mapping({}) == Rules()


def test_rules_file_overrides_only_what_it_names(tmp_path):
    # Given a rules file that changes two values
    path = tmp_path / "rules.toml"
    path.write_text(
        '[welcome]\nchannel = "sms"\n\n[lifecycle]\nactive_window_days = 14\n', encoding="utf-8"
    )

    # When it is loaded
    rules = Rules.load(path)

    # Then those change and everything else keeps its default
    assert rules.welcome.channel == "sms"
    assert rules.lifecycle.active_window_days == 14
    assert rules.welcome.enabled is True
    assert rules.lifecycle.active_min_orders == 2
    assert rules.state == Rules().state


def test_rules_file_path_may_be_a_string(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text("[welcome]\nenabled = false\n", encoding="utf-8")

    assert Rules.load(str(path)).welcome.enabled is False


def test_rules_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Rules().welcome.enabled = False  # type: ignore[misc]


@pytest.mark.parametrize(
    ("mapping", "key", "problem"),
    [
        ({"welcome": {"colour": "red"}}, "welcome.colour", "unknown key"),
        ({"retention": {}}, "retention", "unknown key"),
        ({"welcome": "on"}, "welcome", "expected a table"),
        ({"welcome": {"enabled": "yes"}}, "welcome.enabled", "expected true or false"),
        ({"welcome": {"enabled": 1}}, "welcome.enabled", "expected true or false"),
        ({"welcome": {"template_id": ""}}, "welcome.template_id", "expected a non-empty string"),
        ({"welcome": {"template_id": 7}}, "welcome.template_id", "expected a non-empty string"),
        ({"welcome": {"channel": "fax"}}, "welcome.channel", "must be one of"),
        ({"welcome": {"channel": "EMAIL"}}, "welcome.channel", "must be one of"),
        ({"welcome": {"expires_after_days": 0}}, "welcome.expires_after_days", "must be >= 1"),
        (
            {"lifecycle": {"active_window_days": "30"}},
            "lifecycle.active_window_days",
            "expected an integer",
        ),
        (
            {"lifecycle": {"active_window_days": 30.0}},
            "lifecycle.active_window_days",
            "expected an integer",
        ),
        (
            {"lifecycle": {"active_window_days": True}},
            "lifecycle.active_window_days",
            "expected an integer",
        ),
        ({"lifecycle": {"active_window_days": 0}}, "lifecycle.active_window_days", "must be >= 1"),
        ({"lifecycle": {"active_min_orders": 1}}, "lifecycle.active_min_orders", "must be >= 2"),
        ({"state": {"dedupe_window": 0}}, "state.dedupe_window", "must be >= 1"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_wrong_rule_is_a_config_error_naming_its_key(mapping, key, problem):
    with pytest.raises(ConfigError) as raised:
        Rules.from_mapping(mapping)

    assert raised.value.key == key
    assert problem in raised.value.problem
    assert str(raised.value).startswith(f"configuration error at '{key}': ")


def test_unknown_key_error_lists_the_known_keys():
    with pytest.raises(ConfigError) as raised:
        Rules.from_mapping({"lifecycle": {"active_days": 30}})

    assert raised.value.key == "lifecycle.active_days"
    assert "active_min_orders, active_window_days" in raised.value.problem


def test_wrong_value_in_a_rules_file_names_the_key(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text("[lifecycle]\nactive_window_days = 0\n", encoding="utf-8")

    with pytest.raises(ConfigError) as raised:
        Rules.load(path)

    assert raised.value.key == "lifecycle.active_window_days"


def test_rules_file_that_is_not_toml_is_a_config_error_naming_the_file(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text("[welcome\nenabled = ", encoding="utf-8")

    with pytest.raises(ConfigError) as raised:
        Rules.load(path)

    assert raised.value.key == str(path)
    assert raised.value.problem.startswith("not valid TOML")


def test_missing_rules_file_is_a_config_error_naming_the_setting(tmp_path):
    path = tmp_path / "nowhere.toml"

    with pytest.raises(ConfigError) as raised:
        Rules.load(path)

    assert raised.value.key == "CRM_RULES_FILE"
    assert str(path) in raised.value.problem


def test_config_error_belongs_to_the_project_hierarchy():
    assert issubclass(ConfigError, CrmStreamError)


def test_rules_file_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_bytes(b"\xff\xfe[welcome]\n")

    with pytest.raises(ConfigError):
        Rules.load(path)


def test_rules_path_that_is_a_directory_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError):
        Rules.load(tmp_path)
