"""Failpoints (:mod:`streams.failpoints`): the crash tests' switch, checked on its own.

The crash-point tests (``tests/integration/test_crash_points.py``) rely on three things
here: a point armed makes the process die at once with its own exit code, a point not
armed does nothing, and a name that is not a point is refused (a typo would otherwise
test nothing).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest

from streams import failpoints


@pytest.fixture(autouse=True)
def disarmed():
    yield
    failpoints.arm("")


def test_an_armed_point_ends_the_process_at_once_and_the_others_let_it_go_on():
    script = textwrap.dedent(
        """
        from streams import failpoints
        failpoints.arm("after_send")
        failpoints.hit("after_fold")
        print("after_fold passed", flush=True)
        failpoints.hit("after_send")
        print("after_send passed", flush=True)
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )

    assert run.returncode == 86
    assert run.stdout == "after_fold passed\n"
    assert "failpoint after_send: exiting now (CRM_FAILPOINTS)" in run.stderr


def test_unknown_names_are_refused_each_named_and_nothing_is_armed():
    failpoints.arm("after_write")
    with pytest.raises(ValueError, match="unknown failpoints: after_sned, before_fold"):
        failpoints.arm("after_fold, before_fold,after_sned")

    assert failpoints._armed == {"after_write"}  # the refused spec changed nothing


def test_arming_replaces_what_was_armed_and_ignores_blanks():
    failpoints.arm("after_fold")
    failpoints.arm(" after_send , ,during_restore ")

    assert failpoints._armed == {"after_send", "during_restore"}
    failpoints.arm("")
    assert failpoints._armed == set()


def test_a_hold_armed_waits_for_good_and_one_not_armed_returns_at_once(caplog):
    async def check() -> None:
        await asyncio.wait_for(failpoints.hold("during_restore", "restoring"), 1.0)
        failpoints.arm("during_restore")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(failpoints.hold("during_restore", "restoring"), 0.2)

    asyncio.run(check())
    assert "failpoint during_restore: restoring (CRM_FAILPOINTS)" in caplog.text


def test_every_point_and_hold_is_known_to_the_setting():
    from streams.settings import Settings

    every = ",".join((*failpoints.POINTS, *failpoints.HOLDS))
    assert Settings(failpoints=every).failpoints == every
