"""The crmstream command line, run as a user runs it (subprocesses, real stack)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from schemas import codec
from schemas.actions import Action
from tests.cli import CLI, run

pytestmark = pytest.mark.e2e


def processes_in(workdir: Path) -> list[int]:
    """PIDs whose working directory is inside ``workdir`` (children of the stack)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd.startswith(str(workdir)):
            found.append(int(entry.name))
    return found


def test_help_lists_every_command_with_a_description():
    result = run("--help")

    assert result.returncode == 0
    for command in (
        "demo",
        "up",
        "worker",
        "simulate",
        "customer",
        "actions",
        "dlq",
        "clock",
        "topics",
        "schemas",
        "report",
        "messaging",
    ):
        assert re.search(rf"^\s+{command}\s+\S", result.stdout, re.MULTILINE), command


def test_demo_emits_actions_and_dead_letters_and_leaves_no_process_behind(tmp_path):
    summary_path = tmp_path / "summary.json"
    workdir = tmp_path / "demo"

    result = run(
        "demo",
        "--duration",
        "12",
        "--rate",
        "300",
        "--no-live",
        "--workdir",
        str(workdir),
        "--summary",
        str(summary_path),
        timeout=240,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    summary = codec.loads(summary_path.read_bytes())
    assert summary["events_produced"] >= 1000
    assert summary["actions_by_type"].get("welcome", 0) > 0
    assert summary["dead_letters"] > 0
    assert summary["dead_letters"] == summary["malformed_sent"]  # every bad record, nothing else
    assert summary["duplicate_action_ids"] == 0
    assert "/metrics" in result.stderr
    assert processes_in(workdir) == []


def test_up_serves_a_users_own_producer_and_stops_on_ctrl_c(tmp_path):
    workdir = tmp_path / "up"
    up = subprocess.Popen(
        [*CLI, "up", "--workdir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 120
        assert up.stdout is not None
        while time.monotonic() < deadline:
            line = up.stdout.readline()
            lines.append(line)
            if "crmstream: up." in line:
                break
            assert up.poll() is None, "".join(lines)
        output = "".join(lines)
        broker = re.search(r"broker \(Kafka protocol\):\s+(\S+)", output)
        assert broker, output
        env = {"KAFKA_BROKER": f"kafka://{broker.group(1)}"}

        sent = run("simulate", "--limit", "200", "--rate", "0", "--malformed-rate", "0", env=env)
        assert sent.returncode == 0, sent.stderr
        tail = run(
            "actions",
            "tail",
            "--from-beginning",
            "--limit",
            "1",
            "--idle-exit",
            "30",
            "--json",
            env=env,
            timeout=90,
        )
        assert tail.returncode == 0, tail.stderr
        action = Action.model_validate(codec.loads(tail.stdout.splitlines()[0]))
        # the simulator's customers: a welcome, or a care action whose timer the live
        # clock finds due at once (the simulated timeline starts in the past)
        assert action.customer_id.startswith("c7-")
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(60)
    assert up.returncode == 0
    assert processes_in(workdir) == []


def test_bad_setting_fails_at_start_naming_the_variable():
    result = run("worker", env={"CRM_PARTITIONS": "four"})

    assert result.returncode == 2
    assert "CRM_PARTITIONS" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_rules_file_fails_at_start_naming_the_key(tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text('[lifecycle]\nactive_window_days = -3\nloyal_min_orders = "6"\n')

    result = run("worker", env={"CRM_RULES_FILE": str(rules)})

    assert result.returncode == 2
    assert "lifecycle.active_window_days" in result.stderr
    assert "Traceback" not in result.stderr
    # one line in our words, not pydantic's report of every error
    assert len(result.stderr.strip().splitlines()) == 1
    assert "validation error" not in result.stderr.lower()


def test_clock_commands_explain_themselves():
    group = run("clock", "--help")
    tick = run("clock", "tick", "--help")
    show = run("clock", "show", "--help")

    assert group.returncode == tick.returncode == show.returncode == 0
    for command in ("tick", "show"):
        assert re.search(rf"^\s+{command}\s+\S", group.stdout, re.MULTILINE), command
    assert "--to TIME" in tick.stdout and "--topic FAMILY" in tick.stdout
    assert "every partition" in tick.stdout and "midnight" in tick.stdout
    assert "--connect-timeout" in tick.stdout
    assert "--url URL" in show.stdout and "watermark" in show.stdout
    bare = run("clock")
    assert bare.returncode == 2 and "a subcommand is needed" in bare.stderr


def test_up_and_demo_say_what_they_take_from_the_environment():
    for command in ("up", "demo"):
        shown = run(command, "--help")

        assert shown.returncode == 0
        text = " ".join(shown.stdout.split())
        assert "--clock {live,replay}" in text and "--clock-lateness SECONDS" in text
        assert "every CRM_* variable" in text
        assert "KAFKA_BROKER, REDIS_URL, and per worker CRM_WEB_PORT and CRM_DATA_DIR" in text
    assert "replay clock with 1 h lateness" in " ".join(run("demo", "--help").stdout.split())


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (("up",), {"CRM_CLOCK": "sometimes"}, "CRM_CLOCK"),
        (("demo", "--duration", "5"), {"CRM_ALLOWED_LATENESS": "soon"}, "CRM_ALLOWED_LATENESS"),
        (("up", "--clock-lateness", "-1"), {}, "--clock-lateness"),
    ],
)
def test_up_and_demo_stop_on_a_bad_setting_before_starting_anything(tmp_path, args, env, named):
    workdir = tmp_path / "stack"
    started = time.monotonic()

    result = run(*args, "--workdir", str(workdir), env=env, timeout=30)

    assert result.returncode == 2
    assert named in result.stderr
    assert "Traceback" not in result.stderr
    assert "starting Tansu" not in result.stderr
    assert not workdir.exists()
    assert time.monotonic() - started < 20


def test_a_bad_clock_tick_time_is_refused_before_the_broker_is_asked():
    no_zone = run(
        "clock", "tick", "--to", "1998-06-30T00:00", env={"KAFKA_BROKER": "kafka://127.0.0.1:1"}
    )
    future = run("clock", "tick", "--to", "2999-01-01", env={"KAFKA_BROKER": "kafka://127.0.0.1:1"})

    assert no_zone.returncode == 2 and "has no zone" in no_zone.stderr
    assert future.returncode == 2 and "CRM_MAX_CLOCK_SKEW" in future.stderr
