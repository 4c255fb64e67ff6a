"""Domain rules: domain.md's defaults, overridable from TOML, wrong files named clearly."""

from __future__ import annotations

import dataclasses
import datetime as dt
import tomllib

import pytest

from agents.rules import DEFAULT_SILENT_DAYS, GRADE_COMPONENTS, CouponPolicy, LifecycleRules, Rules
from schemas.actions import ActionType
from schemas.base import Channel
from schemas.errors import ConfigError, CrmStreamError


def test_defaults_are_the_handbooks_examples():
    rules = Rules()

    assert rules.welcome.enabled is True
    assert rules.welcome.channel == "email"
    assert rules.welcome.template_id == "welcome_first_order"
    assert rules.welcome.expires_after_days == 30
    assert rules.lifecycle.active_window_days == 30
    assert rules.lifecycle.active_min_orders == 2
    assert rules.state.dedupe_window == 512


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
        # cross-key bounds one past them (at them: test_cross_key_bounds_that_meet_are_allowed)
        (
            {"policy": {"caps": {"per_channel_day": 4, "per_channel_week": 3}}},
            "policy.caps.per_channel_day",
            "must be <= policy.caps.per_channel_week (3)",
        ),
        (
            {"policy": {"caps": {"total_day": 5, "total_week": 4}}},
            "policy.caps.total_day",
            "must be <= policy.caps.total_week (4)",
        ),
        (
            {"policy": {"caps": {"per_channel_week": 51}, "history_max": 50}},
            "policy.caps.per_channel_week",
            "must be <= policy.history_max (50)",
        ),
        (
            {"complaints": {"first_response": {"hours": 2.0, "fast_hours": 2.5}}},
            "complaints.first_response.fast_hours",
            "must be <= complaints.first_response.hours (2.0)",
        ),
        (
            {"flags": {"complaints_more_than": 20, "evidence_keep": 20}},
            "flags.evidence_keep",
            "must be >= 21 (flags.complaints_more_than + 1)",
        ),
        (
            {"aggregates": {"logistics_delay": {"threshold": 30, "max_affected": 29}}},
            "aggregates.logistics_delay.max_affected",
            "must be >= aggregates.logistics_delay.threshold (30)",
        ),
        (
            {"aggregates": {"complaint_surge": {"growth": 0.8, "red_growth": 0.7}}},
            "aggregates.complaint_surge.red_growth",
            "must be >= aggregates.complaint_surge.growth (0.8)",
        ),
        ({"policy": {"caps": {"total_day": 0}}}, "policy.caps.total_day", "must be >= 1"),
        (
            {"flags": {"disabled_kinds": ["repeated_retruns"]}},
            "flags.disabled_kinds[0]",
            "unknown kind 'repeated_retruns'",
        ),
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


# -- the customer model's rules: wrong values name their key -----------------------


@pytest.mark.parametrize(
    ("mapping", "key", "problem"),
    [
        ({"rfm": {"windowz": [30]}}, "rfm.windowz", "unknown key"),
        (
            {"rfm": {"windows_days": [30, 0, 365], "group_window_days": 30}},
            "rfm.windows_days[1]",
            "must be >= 1",
        ),
        (
            {"rfm": {"windows_days": [30, -7], "group_window_days": 30}},
            "rfm.windows_days[1]",
            "must be >= 1",
        ),
        ({"rfm": {"windows_days": [30, 30, 90]}}, "rfm.windows_days", "has a window twice"),
        ({"rfm": {"windows_days": []}}, "rfm.windows_days", "needs at least one window"),
        ({"counters": {"windows_days": [7, 7]}}, "counters.windows_days", "has a window twice"),
        ({"rfm": {"group_window_days": 60}}, "rfm.group_window_days", "must be one of"),
        (
            {"lifecycle": {"dormant_after_days": 30, "churned_after_days": 30}},
            "lifecycle.churned_after_days",
            "must be greater than lifecycle.dormant_after_days (30)",
        ),
        (
            {"lifecycle": {"dormant_after_days": 60, "churned_after_days": 45}},
            "lifecycle.churned_after_days",
            "must be greater than",
        ),
        (
            {"rfm": {"groups": [{"name": "odd", "f_min": 3, "f_max": 2}]}},
            "rfm.groups[0].f_min",
            "overlapping thresholds: min is above max",
        ),
        (
            {"rfm": {"groups": [{"name": "odd", "r_min_days": 30, "r_max_days": 7}]}},
            "rfm.groups[0].r_min_days",
            "overlapping thresholds: min is above max",
        ),
        (
            {
                "rfm": {
                    "groups": [
                        {"name": "recent", "r_max_days": 30},
                        {"name": "best", "r_max_days": 7, "f_min": 3},
                    ]
                }
            },
            "rfm.groups[1]",
            "taken first by 'recent'",
        ),
        (
            {"rfm": {"groups": [{"name": "a", "f_min": 1}, {"name": "a", "f_min": 2}]}},
            "rfm.groups[1].name",
            "names two groups",
        ),
        (
            {"rfm": {"groups": [{"name": "other", "f_min": 1}]}},
            "rfm.groups[0].name",
            "names two groups",
        ),
        ({"rfm": {"groups": [{"f_min": 1}]}}, "rfm.groups[0].name", "is required"),
        ({"rfm": {"groups": [{"name": "x", "m_min": -1}]}}, "rfm.groups[0].m_min", ">= 0"),
        (
            {"grade": {"potential_min_score": 80, "core_min_score": 75}},
            "grade.potential_min_score",
            "overlaps core",
        ),
        ({"grade": {"core_min_score": 101}}, "grade.core_min_score", "between 0 and 100"),
        (
            {"tags": {"rules": [{"tag": "risk:x", "feature": "returns_14d", "min": 1}]}},
            "tags.rules[0].feature",
            "unknown feature",
        ),
        (
            {"tags": {"rules": [{"tag": "risk:x", "feature": "returns_90d"}]}},
            "tags.rules[0]",
            "needs min, max or both",
        ),
        (
            {"tags": {"rules": [{"tag": "x", "feature": "spend", "min": 5, "max": 1}]}},
            "tags.rules[0].min",
            "must be <= max",
        ),
        (
            {"tags": {"budget_max_item_price": 150.0}},
            "tags.budget_max_item_price",
            "overlaps premium",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_wrong_model_rule_is_a_config_error_naming_its_key(mapping, key, problem):
    with pytest.raises(ConfigError) as raised:
        Rules.from_mapping(mapping)

    assert raised.value.key == key
    assert problem in raised.value.problem


def test_unknown_tag_feature_error_lists_the_known_features():
    with pytest.raises(ConfigError) as raised:
        Rules.from_mapping({"tags": {"rules": [{"tag": "x", "feature": "refunds", "min": 1}]}})

    assert "returns_90d" in raised.value.problem
    assert "monetary_365d" in raised.value.problem


def test_a_tag_rule_may_use_a_configured_counter_window():
    rules = Rules.from_mapping(
        {
            "counters": {"windows_days": [14]},
            "tags": {"rules": [{"tag": "risk:returns", "feature": "returns_14d", "min": 2}]},
        }
    )

    assert "returns_14d" in rules.feature_names()
    assert "returns_90d" not in rules.feature_names()


def test_model_defaults_are_domain_md_examples():
    rules = Rules()

    life = rules.lifecycle
    assert (life.new_days, life.dormant_after_days, life.churned_after_days) == (30, 30, 90)
    assert (life.loyal_min_tenure_days, life.loyal_min_orders) == (180, 6)
    assert rules.rfm.windows_days == (30, 90, 365)
    assert rules.rfm.group_window_days == 90
    assert [
        (g.name, g.r_max_days, g.r_min_days, g.f_min, g.f_max, g.m_min, g.m_max)
        for g in rules.rfm.groups
    ] == [
        ("high_value", 7, None, 3, None, 800, None),
        ("potential", 15, None, 2, None, 500, None),
        ("sleeping", None, 30, None, 1, None, 300),
    ]
    assert rules.history_days == 365


def test_rules_file_with_a_custom_rfm_group_table_loads(tmp_path):
    # Given a rules file with its own [[rfm.groups]] array of tables
    path = tmp_path / "rules.toml"
    path.write_text(
        "[rfm]\n"
        "windows_days = [30, 60]\n"
        "group_window_days = 60\n"
        'fallback_group = "everyone_else"\n'
        "\n"
        "[[rfm.groups]]\n"
        'name = "champions"\n'
        "r_max_days = 10\n"
        "f_min = 4\n"
        "m_min = 250.5\n"
        "\n"
        "[[rfm.groups]]\n"
        'name = "lapsed"\n'
        "r_min_days = 45\n"
        "\n"
        "[care.vip]\n"
        'group = "champions"\n'
        "[care.tier_nudge]\n"
        'ladder = ["champions"]\n'
        "\n"
        "[grade]\n"
        "window_days = 60\n"
        "\n"
        "[counters]\n"
        "windows_days = [7, 30]\n"
        "\n"
        "[[tags.rules]]\n"
        'tag = "risk:returns"\n'
        'feature = "returns_30d"\n'
        "min = 2\n",
        encoding="utf-8",
    )

    # When it is loaded
    rules = Rules.load(path)

    # Then the table replaces the default groups, in order, with its types
    groups = rules.rfm.groups
    assert [g.name for g in groups] == ["champions", "lapsed"]
    assert (groups[0].r_max_days, groups[0].f_min, groups[0].m_min) == (10, 4.0, 250.5)
    assert isinstance(groups[0].f_min, float)
    assert groups[1].r_min_days == 45 and groups[1].f_min is None
    assert rules.rfm.fallback_group == "everyone_else"
    assert rules.rfm.windows_days == (30, 60)
    assert [(r.tag, r.feature, r.min, r.max) for r in rules.tags.rules] == [
        ("risk:returns", "returns_30d", 2.0, None)
    ]
    assert rules.history_days == 365  # the default loyal window is still the longest


# -- care rules that must not contradict themselves (issue #12, item 7) -------------


def test_case_and_follow_up_defaults():
    rules = Rules()

    assert rules.care.follow_up.coalesce_minutes == 60.0
    win_back = rules.care.win_back
    assert win_back.service_strategies == ("personal_call",)
    assert (win_back.call_channel, win_back.call_template_id) == (
        "phone",
        "win_back_personal_call",
    )
    assert win_back.guardrail_retries == 1


@pytest.mark.parametrize(
    ("mapping", "key", "problem"),
    [
        (
            {"care": {"win_back": {"strategies": ["retention_coupon", "exclusive_offer"]}}},
            "care.win_back.service_strategies[0]",
            "'personal_call' is not one of care.win_back.strategies",
        ),
        (
            {"care": {"win_back": {"call_channel": "pigeon"}}},
            "care.win_back.call_channel",
            "must be one of",
        ),
        (
            {"care": {"win_back": {"guardrail_retries": -1}}},
            "care.win_back.guardrail_retries",
            ">= 0",
        ),
        (
            {"care": {"follow_up": {"coalesce_minutes": -5}}},
            "care.follow_up.coalesce_minutes",
            ">= 0",
        ),
    ],
)
def test_wrong_case_rule_is_a_config_error_naming_its_key(mapping, key, problem):
    with pytest.raises(ConfigError) as raised:
        Rules.from_mapping(mapping)

    assert raised.value.key == key
    assert problem in raised.value.problem


def test_a_strategy_list_without_a_call_loads_with_no_service_strategies():
    rules = Rules.from_mapping(
        {"care": {"win_back": {"strategies": ["retention_coupon"], "service_strategies": []}}}
    )

    assert rules.care.win_back.service_strategies == ()


# -- the rules as pydantic models (issue 13) ------------------------------------------


def test_several_mistakes_give_one_config_error_line_naming_the_first():
    # Given a mapping with three mistakes in two tables
    mapping = {
        "lifecycle": {"new_days": "30"},
        "welcome": {"expires_after_days": 0, "template_id": ""},
    }

    # When it is loaded
    with pytest.raises(ConfigError) as raised:
        Rules.from_mapping(mapping)

    # Then one ConfigError names the first of them in the tables' order, on one
    # line, in our words (pydantic's own report is not chained to it)
    assert str(raised.value) == (
        "configuration error at 'welcome.template_id': expected a non-empty string"
    )
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


@pytest.mark.parametrize(
    ("mapping", "key", "problem"),
    [
        (
            {"rfm": {"groups": [{"name": "x", "f_mni": 1}]}},
            "rfm.groups[0].f_mni",
            "unknown key (known here: f_max, f_min, m_max, m_min, name, r_max_days, r_min_days)",
        ),
        (
            {"welcome": {"channel": "fax"}},
            "welcome.channel",
            "unknown channel 'fax' (must be one of sms, email, push, wechat, phone)",
        ),
        (
            {"policy": {"caps": {"week_starts_on": "funday"}}},
            "policy.caps.week_starts_on",
            ("must be one of monday, tuesday, wednesday, thursday, friday, saturday, sunday"),
        ),
        ({"rfm": {"windows_days": "30"}}, "rfm.windows_days", "expected an array"),
        ({"rfm": {"groups": [{"name": "x", "m_min": -1}]}}, "rfm.groups[0].m_min", "must be >= 0"),
        (
            {"tags": {"rules": [{"tag": "x", "feature": "spend", "min": "1"}]}},
            "tags.rules[0].min",
            "expected a number",
        ),
        (
            {"flags": {"cancellations_ratio": 1.5}},
            "flags.cancellations_ratio",
            "must be above 0 and at most 1",
        ),
        (
            {"complaints": {"calendar": {"timezone": "Mars/Olympus"}}},
            "complaints.calendar.timezone",
            "unknown time zone",
        ),
        (
            {"complaints": {"calendar": {"holidays": [20241225]}}},
            "complaints.calendar.holidays[0]",
            "expected an ISO date (YYYY-MM-DD)",
        ),
        (
            {"policy": {"quiet_hours": {"start": 21}}},
            "policy.quiet_hours.start",
            "expected a non-empty string",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_each_kind_of_mistake_reads_as_one_clear_line(mapping, key, problem):
    with pytest.raises(ConfigError) as raised:
        Rules.from_mapping(mapping)

    assert (raised.value.key, raised.value.problem) == (key, problem)


def test_a_rules_mapping_that_is_not_a_table_is_named_as_the_root():
    with pytest.raises(ConfigError) as raised:
        Rules.from_mapping(["welcome"])  # type: ignore[arg-type]

    assert (raised.value.key, raised.value.problem) == ("<root>", "expected a table")


def test_choices_load_as_their_enums():
    rules = Rules.from_mapping(
        {"welcome": {"channel": "sms"}, "policy": {"fallback_channels": ["push"]}}
    )

    assert rules.welcome.channel is Channel.SMS
    assert rules.policy.fallback_channels == (Channel.PUSH,)
    assert Rules().policy.coupons.order[0] is ActionType.WIN_BACK_ESCALATION


def test_holidays_may_be_toml_dates_or_iso_strings():
    raw = tomllib.loads('[complaints.calendar]\nholidays = [2024-12-25, "2024-12-26"]\n')

    calendar = Rules.from_mapping(raw).complaints.calendar

    assert calendar.holiday_dates == {dt.date(2024, 12, 25), dt.date(2024, 12, 26)}


def test_rules_built_in_code_are_checked_like_a_file():
    # The checks across keys are the tables' own validators, not a loader step.
    with pytest.raises(ConfigError) as raised:
        LifecycleRules(dormant_after_days=60, churned_after_days=45)

    assert raised.value.key == "lifecycle.churned_after_days"


def test_derived_facts_are_computed_once_and_do_not_change_equality():
    rules = Rules()
    first = rules.policy.holdout.share_for("birthday")

    assert rules.assessment_windows is rules.assessment_windows
    assert rules.policy.coupons.rank is rules.policy.coupons.rank
    assert first == 0.0
    assert rules == Rules() and hash(rules) == hash(Rules())


@pytest.mark.parametrize("text", ["00:00", "08:59", "23:59"])
def test_a_local_time_anywhere_in_the_day_loads(text):
    assert (
        Rules.from_mapping({"policy": {"quiet_hours": {"start": text}}}).policy.quiet_hours.start
        == text
    )


@pytest.mark.parametrize("text", ["24:00", "23:60", "7:00", "07:5", "0700", "ab:cd", "07:00:00"])
def test_a_local_time_past_the_day_or_not_hh_mm_is_refused(text):
    with pytest.raises(ConfigError) as raised:
        Rules.from_mapping({"policy": {"quiet_hours": {"start": text}}})

    assert raised.value.key == "policy.quiet_hours.start"
    assert "HH:MM" in raised.value.problem


@pytest.mark.parametrize(
    "mapping",
    [
        {"grade": {"potential_min_score": 60.0, "core_min_score": 60.0}},
        {"tags": {"budget_max_item_price": 40.0, "premium_min_item_price": 40.0}},
        {
            "tags": {
                "rules": [{"tag": "risk:returns", "feature": "returns_90d", "min": 2, "max": 2}]
            }
        },
        {
            "grade": {
                f"weight_{name}": 0.0 for name in ("payment", "returns", "reviews", "activity")
            }
        },
    ],
    ids=["grade bands meet", "price bands meet", "tag range of one value", "one weight left"],
)
def test_bounds_that_meet_are_allowed(mapping):
    Rules.from_mapping(mapping)


def test_grade_weights_all_zero_are_refused():
    weights = {f"weight_{name}": 0.0 for name in GRADE_COMPONENTS}

    with pytest.raises(ConfigError, match="at least one weight must be above 0"):
        Rules.from_mapping({"grade": weights})


def test_the_coupons_silent_customer_is_the_win_backs_unless_set_apart():
    assert CouponPolicy().silent_days == DEFAULT_SILENT_DAYS
    same = Rules.from_mapping({"care": {"win_back": {"silent_days": 45}}})
    apart = Rules.from_mapping(
        {
            "care": {"win_back": {"silent_days": 45}},
            "policy": {"coupons": {"silent_after_days": 10}},
        }
    )

    assert same.policy.coupons.silent_days == 45
    assert apart.policy.coupons.silent_days == 10


@pytest.mark.parametrize(
    "mapping",
    [
        {"policy": {"caps": {"per_channel_day": 3, "per_channel_week": 3}}},
        {"policy": {"caps": {"total_day": 4, "total_week": 4}}},
        {"policy": {"caps": {"per_channel_week": 50}, "history_max": 50}},
        {"complaints": {"first_response": {"hours": 2.0, "fast_hours": 2.0}}},
        {"flags": {"complaints_more_than": 19, "evidence_keep": 20}},
        {"flags": {"disabled_kinds": ["repeated_returns"]}},
        {"aggregates": {"logistics_delay": {"threshold": 30, "max_affected": 30}}},
        {"aggregates": {"complaint_surge": {"growth": 0.8, "red_growth": 0.8}}},
        {
            "rfm": {"groups": [{"name": "pairs", "f_min": 2, "f_max": 2}]},
            "care": {"vip": {"enabled": False}, "tier_nudge": {"enabled": False}},
        },
    ],
    ids=[
        "channel caps meet",
        "total caps meet",
        "week cap at the history",
        "fast = hours",
        "evidence holds a complaint window",
        "a known kind disabled",
        "affected cap at the threshold",
        "red surge = yellow",
        "an RFM bound of one value",
    ],
)
def test_cross_key_bounds_that_meet_are_allowed(mapping):
    Rules.from_mapping(mapping)


def test_the_history_kept_covers_a_dormant_spell_longer_than_every_window():
    rules = Rules.from_mapping({"lifecycle": {"churned_after_days": 400, "reactivated_days": 30}})

    assert max(rules.assessment_windows) < 430
    assert rules.history_days == 430
