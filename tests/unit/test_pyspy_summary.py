"""``bench.throughput --profile``: where a worker's samples go, thread by thread.

py-spy's collapsed stacks carry no thread label here: faust's consumer thread is the
one whose stacks start in ``threading``. Its fetch requests pass through
``AIOKafkaClient.send``, one of the producer's markers, and at 100k customers 7.7 %
of all samples went to "producer" that way. py-spy also counted that thread active
for 24 % of the samples while /proc gave it 5 % of the worker's CPU (it waits for the
GIL), so the event loop's own shares are read from its samples alone.

Unit tier: :func:`bench.pyspy.summarize` over a written stack file.
"""

from __future__ import annotations

from pathlib import Path

from bench import pyspy

MAIN = "_run_module_as_main (<frozen runpy>:173);run_worker (streams/worker.py:41)"
CONSUMER = "Thread._bootstrap (threading.py:988);WorkerThread.run (mode/threads.py:60)"
FOLD = ";".join(
    (
        MAIN,
        "CustomerAgent.handle_round (streams/customer_agent.py:475)",
        "decide (agents/customer_events.py:271)",
    )
)
SEND = ";".join(
    (
        MAIN,
        "Sender._sender_routine (aiokafka/producer/sender.py:80)",
        "AIOKafkaClient.send (aiokafka/client.py:500)",
    )
)
FETCH = ";".join(
    (
        CONSUMER,
        "Fetcher._proc_fetch_request (aiokafka/consumer/fetcher.py:700)",
        "AIOKafkaClient.send (aiokafka/client.py:500)",
    )
)


def summary(tmp_path: Path, stacks: dict[str, int], cpu: dict[str, float] | None = None) -> dict:
    path = tmp_path / "stacks.txt"
    path.write_text("".join(f"{stack} {n}\n" for stack, n in stacks.items()))
    return pyspy.summarize(path, seconds=10.0, rate=100, cpu=cpu)


def shares(result: dict, key: str = "share") -> dict[str, float]:
    return {row["bucket"]: row[key] for row in result["buckets"]}


def test_the_consumer_threads_requests_are_its_own_not_the_producers(tmp_path: Path) -> None:
    result = summary(tmp_path, {FOLD: 60, SEND: 10, FETCH: 30})
    buckets = shares(result)
    assert buckets[pyspy.CONSUMER_THREAD] == 0.30
    assert buckets["producer: aiokafka's send path and sender task"] == 0.10


def test_the_event_loops_shares_count_its_samples_alone(tmp_path: Path) -> None:
    result = summary(tmp_path, {FOLD: 60, SEND: 10, FETCH: 30})
    loop = shares(result, "loop_share")
    assert result["loop_samples"] == 70
    assert loop["fold: the rules per event (decide)"] == round(60 / 70, 4)
    assert loop["producer: aiokafka's send path and sender task"] == round(10 / 70, 4)
    assert loop[pyspy.CONSUMER_THREAD] == 0.0


def test_the_report_sets_the_samples_beside_the_cpu_proc_counted(tmp_path: Path) -> None:
    result = summary(tmp_path, {FOLD: 60, SEND: 10, FETCH: 30}, cpu={"worker": 7.5, "loop": 7.0})
    text = pyspy.render(result)
    assert "~10% of one CPU" in text  # 100 samples over 10 s at 100 Hz
    assert "/proc: the worker 75%, its event loop's thread 70%, the others 5%" in text
    assert "waits for the GIL" in text
