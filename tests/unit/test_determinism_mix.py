"""bench.determinism runs on either mix: its README described a ``--mix`` (storefront the
default) that the script never had; every run used the personas' own mix."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from bench.determinism import (
    DEFAULT,
    SHORT,
    build_parser,
    check_options,
    history_simulator,
    options_from_args,
)
from streams.tools.simulator import MIXES


def _shares(mix: str) -> float:
    """The share of browsing events among 4,000 records past the introductions."""
    o = options_from_args(build_parser().parse_args(["--mix", mix, "--customers", "200"]))
    records = list(itertools.islice(history_simulator(o), 6_000))[2_000:]
    browsing = sum(1 for r in records if r.family == "browsing")
    return browsing / len(records)


def test_both_presets_keep_the_personas_own_mix():
    assert DEFAULT.mix == SHORT.mix == "simulator"


@pytest.mark.parametrize("mix", sorted(MIXES))
def test_the_mix_is_an_option(mix: str):
    assert options_from_args(build_parser().parse_args(["--mix", mix])).mix == mix


def test_the_storefront_history_is_mostly_browsing_and_the_simulators_is_not():
    assert _shares("storefront") > 0.6
    assert _shares("simulator") < 0.4


def test_an_unknown_mix_is_a_usage_error():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--mix", "nope"])


def test_an_unknown_mix_given_in_code_is_refused_before_anything_starts():
    problem = check_options(dataclasses.replace(DEFAULT, mix="nope"))
    assert problem is not None and "--mix" in problem
