"""TritonCollector against a real tritonserver (see triton_fixtures.py), and its metrics parser."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.http.aio as triton_http
from tritonclient.utils import InferenceServerException

from agents.triton import TritonCollector, TritonError, parse_metrics
from devtools import triton_server
from devtools.ports import free_port
from devtools.triton_server import LocalTriton, TritonNotInstalled, TritonStartError
from tests.agents.triton_fixtures import infer, triton_counts, until, until_counted

RATE_FIELDS = ("success_per_s", "failure_per_s", "inference_per_s")
TIME_FIELDS = ("queue_time_ms", "compute_time_ms", "latency_ms")

DATA = Path(__file__).parent / "data"
# Captured from tritonserver 2.51 (nvidia-pytriton 0.7.0) while `slow` had two requests waiting
# and `echo` had answered three requests and failed one.
CAPTURED_METRICS = (DATA / "triton_metrics_slow_and_echo.txt").read_text()


def model(sample: dict, name: str) -> dict:
    [entry] = [entry for entry in sample["models"] if entry["name"] == name]
    return entry


async def repository_state(client: triton_http.InferenceServerClient, name: str) -> dict:
    """Triton's own index entry, read without the collector (whose readings a test may be checking)."""
    [entry] = [entry for entry in await client.get_model_repository_index() if entry["name"] == name]
    return entry


def established_connections_to(port: int) -> int:
    """Open TCP connections on this host whose remote end is `port` (/proc/net/tcp, state 01)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) == port:
            count += 1
    return count


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


# ---- the metrics parser -----------------------------------------------------------------


def test_it_parses_captured_triton_metrics():
    metrics = parse_metrics(CAPTURED_METRICS)

    assert metrics["nv_inference_pending_request_count"] == [
        ({"model": "slow", "version": "1"}, 2.0),
        ({"model": "echo", "version": "1"}, 0.0),
    ]
    failures = {
        labels["reason"]: value
        for labels, value in metrics["nv_inference_request_failure"]
        if labels["model"] == "echo"
    }
    assert failures == {"OTHER": 0.0, "CANCELED": 0.0, "BACKEND": 1.0, "REJECTED": 0.0}
    assert metrics["nv_inference_request_duration_us"][0] == ({"model": "slow", "version": "1"}, 232128.0)
    assert metrics["nv_cpu_utilization"] == [({}, 0.0)]
    assert "nv_inference_exec_count" in metrics and len(metrics) == 12


def test_it_parses_escaped_labels_timestamps_and_special_values():
    metrics = parse_metrics(
        'odd{path="C:\\\\models",quote="say \\"hi\\"",lines="a\\nb",} 1.5e3 1764190000000\nnan_one NaN\nbig +Inf\n'
    )

    assert metrics["odd"] == [({"path": "C:\\models", "quote": 'say "hi"', "lines": "a\nb"}, 1500.0)]
    assert metrics["big"] == [({}, float("inf"))]
    assert str(metrics["nan_one"][0][1]) == "nan"


@pytest.mark.parametrize("line", ["nv_inference_count{model=echo} 3", 'nv_inference_count{model="echo"}', "3 nv_count"])
def test_it_rejects_lines_that_are_not_prometheus_samples(line):
    with pytest.raises(ValueError, match="line 2"):
        parse_metrics(f"# HELP nv_inference_count …\n{line}\n")


# ---- the collector against a real Triton ------------------------------------------------


async def test_it_reports_a_live_ready_server_with_its_metadata(collector, triton):
    sample = await collector.collect()

    assert sample["name"] == "triton"
    assert sample["url"] == triton.http_url
    assert sample["metrics_url"] == triton.metrics_url
    assert (sample["live"], sample["ready"], sample["error"]) == (True, True, None)
    assert sample["server"]["name"] == "triton"
    assert re.fullmatch(r"\d+\.\d+\.\d+", sample["server"]["version"])
    assert {"model_repository", "statistics"} <= set(sample["server"]["extensions"])


async def test_it_lists_the_repository_with_each_models_state(collector):
    sample = await collector.collect()

    assert {entry["name"] for entry in sample["models"]} == {"broken", "echo", "lifecycle", "slow"}
    for name in ("echo", "slow"):
        entry = model(sample, name)
        assert (entry["version"], entry["state"], entry["reason"]) == ("1", "READY", "")
        assert entry["stats"]["queue_depth"] == 0
    # Never loaded in this session: Triton lists it without version or state.
    assert model(sample, "broken") == {
        "name": "broken",
        "version": None,
        "state": "UNAVAILABLE",
        "reason": "not loaded",
        "stats": {},
    }


async def test_it_reports_a_loaded_model_ready(collector, triton_client):
    await collector.unload_model("lifecycle")
    await until(lambda: repository_state(triton_client, "lifecycle"), lambda entry: entry.get("state") != "UNLOADING")

    await collector.load_model("lifecycle")

    entry = model(await collector.collect(), "lifecycle")
    assert (entry["version"], entry["state"], entry["reason"]) == ("1", "READY", "")
    assert entry["stats"]["success_total"] == 0
    assert (await infer(triton_client, "lifecycle", [4.0, 2.0])).tolist() == [4.0, 2.0]


async def test_it_loads_a_model_with_the_config_it_is_given(collector, triton_client):
    config = await triton_client.get_model_config("echo")
    config["parameters"] = {"loaded_by": {"string_value": "the collector test"}}
    config.pop("name")

    await collector.load_model("lifecycle", config=json.dumps(config))

    loaded = await triton_client.get_model_config("lifecycle")
    assert loaded["parameters"]["loaded_by"] == {"string_value": "the collector test"}
    assert model(await collector.collect(), "lifecycle")["state"] == "READY"


async def test_it_reports_an_unloaded_model_unavailable(collector, triton_client):
    await collector.load_model("lifecycle")

    await collector.unload_model("lifecycle")

    sample = await until(collector.collect, lambda sample: model(sample, "lifecycle")["state"] == "UNAVAILABLE")
    entry = model(sample, "lifecycle")
    assert (entry["version"], entry["reason"], entry["stats"]) == ("1", "unloaded", {})
    with pytest.raises(InferenceServerException, match="lifecycle"):
        await infer(triton_client, "lifecycle", [1.0])


async def test_it_raises_triton_error_for_a_failed_load(fresh_triton):
    collector = TritonCollector(fresh_triton.http_url, fresh_triton.metrics_url)
    try:
        with pytest.raises(TritonError, match=r"could not load 'broken'.*broken on purpose"):
            await collector.load_model("broken")

        sample = await collector.collect()
    finally:
        await collector.close()
    entry = model(sample, "broken")
    assert (entry["version"], entry["state"]) == ("1", "UNAVAILABLE")
    assert "RuntimeError: broken on purpose" in entry["reason"]
    # Triton's strict readiness: a model that failed to load keeps the server unready.
    assert (sample["live"], sample["ready"]) == (True, False)


async def test_it_raises_triton_error_for_a_model_missing_from_the_repository(collector):
    with pytest.raises(TritonError, match=r"could not load 'nothing-here'.*failed to poll from model repository"):
        await collector.load_model("nothing-here")


async def test_it_raises_triton_error_when_the_server_cannot_be_reached():
    collector = TritonCollector(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(TritonError, match=r"could not unload 'echo'.*Cannot connect"):
            await collector.unload_model("echo")
    finally:
        await collector.close()


async def test_it_reports_totals_rates_and_average_times_between_collects(collector, triton_client):
    counted_before = await triton_counts(triton_client, "echo")
    first_started = time.monotonic()
    before = model(await collector.collect(), "echo")["stats"]
    first_finished = time.monotonic()
    for value in range(5):
        assert (await infer(triton_client, "echo", [float(value)])).tolist() == [float(value)]
    for _ in range(2):
        with pytest.raises(InferenceServerException, match="echo needs at least one value"):
            await infer(triton_client, "echo", [])
    await until_counted(triton_client, "echo", counted_before[0] + 5, counted_before[1] + 2)
    second_started = time.monotonic()
    after = model(await collector.collect(), "echo")["stats"]
    second_finished = time.monotonic()

    assert after["success_total"] - before["success_total"] == 5
    assert after["failure_total"] - before["failure_total"] == 2
    # The collector timestamps each collect somewhere inside the call.
    longest, shortest = second_finished - first_started, second_started - first_finished
    # Rates are rounded to 3 decimals.
    assert 5 / longest - 0.001 <= after["success_per_s"] <= 5 / shortest + 0.001
    assert 2 / longest - 0.001 <= after["failure_per_s"] <= 2 / shortest + 0.001
    assert after["inference_per_s"] == after["success_per_s"]
    assert 0 < after["compute_time_ms"] <= after["latency_ms"] < shortest * 1000
    assert 0 <= after["queue_time_ms"] <= after["latency_ms"]
    assert after["queue_depth"] == 0


async def test_it_gives_totals_but_no_rates_on_the_first_collect(triton, triton_client):
    await infer(triton_client, "echo", [1.0])
    collector = TritonCollector(triton.http_url, triton.metrics_url)
    try:
        stats = model(await collector.collect(), "echo")["stats"]
    finally:
        await collector.close()

    assert stats["success_total"] >= 1
    assert not set(stats) & {*RATE_FIELDS, *TIME_FIELDS}


async def test_it_sees_requests_queue_behind_a_slow_model(collector, triton_client):
    await collector.collect()
    requests = [asyncio.create_task(infer(triton_client, "slow", [float(value)])) for value in range(4)]
    try:
        busy = await until(collector.collect, lambda sample: model(sample, "slow")["stats"]["queue_depth"] > 0)
    finally:
        answers = await asyncio.gather(*requests)

    assert 1 <= model(busy, "slow")["stats"]["queue_depth"] <= 4
    assert [answer.tolist() for answer in answers] == [[0.0], [1.0], [2.0], [3.0]]
    stats = model(await collector.collect(), "slow")["stats"]
    assert stats["queue_depth"] == 0
    # Each request sleeps 200 ms on the model's one instance, so those behind it waited.
    assert stats["compute_time_ms"] >= 195
    assert stats["queue_time_ms"] > 0
    assert stats["latency_ms"] >= stats["compute_time_ms"] + stats["queue_time_ms"] - 1


async def test_it_restarts_the_difference_when_a_reload_resets_counters(collector, triton_client):
    def lifecycle_successes(sample: dict) -> int:
        return model(sample, "lifecycle")["stats"]["success_total"]

    await collector.load_model("lifecycle")
    for _ in range(3):
        await infer(triton_client, "lifecycle", [1.0])
    # Triton counts a request just after sending its answer, so the count can trail the client.
    await until(collector.collect, lambda sample: lifecycle_successes(sample) >= 3)
    await collector.unload_model("lifecycle")
    await until(lambda: repository_state(triton_client, "lifecycle"), lambda entry: entry["state"] == "UNAVAILABLE")
    await collector.load_model("lifecycle")
    await infer(triton_client, "lifecycle", [1.0])

    reloaded = model(await collector.collect(), "lifecycle")["stats"]
    await until(collector.collect, lambda sample: lifecycle_successes(sample) == 1)
    await infer(triton_client, "lifecycle", [1.0])
    next_one = model(await until(collector.collect, lambda sample: lifecycle_successes(sample) == 2), "lifecycle")[
        "stats"
    ]

    assert reloaded["success_total"] in (0, 1)
    assert not set(reloaded) & {*RATE_FIELDS, *TIME_FIELDS}
    assert next_one["success_per_s"] > 0
    assert all(next_one[field] >= 0 for field in (*RATE_FIELDS, *TIME_FIELDS))


async def test_it_reuses_its_connections_across_collects(collector, triton):
    for _ in range(5):
        await collector.collect()

    assert established_connections_to(triton.http_port) == 1
    assert established_connections_to(triton.metrics_port) == 1


async def test_it_falls_back_to_triton_statistics_without_the_metrics_endpoint(triton, triton_client):
    collector = TritonCollector(triton.http_url, f"http://127.0.0.1:{free_port()}/metrics")
    try:
        first = await collector.collect()
        await infer(triton_client, "echo", [1.0])
        await until_counted(triton_client, "echo", model(first, "echo")["stats"]["success_total"] + 1)
        second = await collector.collect()
    finally:
        await collector.close()

    assert (second["live"], second["ready"]) == (True, True)
    assert "Cannot connect" in second["error"] and "queue depths unknown" in second["error"]
    stats = model(second, "echo")["stats"]
    assert "queue_depth" not in stats
    assert stats["success_total"] == model(first, "echo")["stats"]["success_total"] + 1
    assert stats["success_per_s"] > 0 and stats["latency_ms"] > 0


async def test_it_reports_a_refused_connection_as_not_live():
    collector = TritonCollector(f"http://127.0.0.1:{free_port()}", name="gpu-01-triton")
    try:
        sample = await collector.collect()
    finally:
        await collector.close()

    assert sample["name"] == "gpu-01-triton"
    assert (sample["live"], sample["ready"], sample["server"], sample["models"]) == (False, False, None, [])
    assert "/v2/health/live" in sample["error"] and "Cannot connect" in sample["error"]


async def test_it_reports_a_server_that_does_not_answer_as_not_live(silent_port):
    collector = TritonCollector(f"http://127.0.0.1:{silent_port}", timeout_s=0.2)
    try:
        started = time.monotonic()
        sample = await collector.collect()
    finally:
        await collector.close()

    assert time.monotonic() - started < 2
    assert (sample["live"], sample["ready"], sample["models"]) == (False, False, [])
    assert sample["error"].endswith("no answer within 0.2 s")


def test_it_defaults_the_metrics_url_to_port_8002_on_the_same_host():
    assert TritonCollector("http://gpu-01:8100").metrics_url == "http://gpu-01:8002/metrics"
    assert TritonCollector("gpu-01:8100", "http://gpu-01:9102").metrics_url == "http://gpu-01:9102/metrics"
    assert TritonCollector("https://gpu-01:8100/").url == "https://gpu-01:8100"


# ---- the local server ----------------------------------------------------------------------


def test_it_refuses_to_start_triton_on_a_port_in_use(triton_repository, silent_port, tmp_path):
    server = LocalTriton(triton_repository, http_port=silent_port, log_path=tmp_path / "triton.log")

    with pytest.raises(TritonStartError, match=f"Socket '127.0.0.1:{silent_port}' already in use"):
        server.start()
    assert not server.running


def test_it_says_how_to_install_triton_when_the_wheel_is_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(triton_server.importlib.util, "find_spec", lambda name: None)

    with pytest.raises(TritonNotInstalled, match=r"pip install nvidia-pytriton==0\.7\.0"):
        triton_server.prepare_backends(tmp_path)


def test_it_reloads_a_model_with_one_parameter_changed(triton_repository):
    with LocalTriton(triton_repository, load_models=["slow"]) as server:
        server.reload_with_parameter("slow", "delay_ms", "20")
        status, body = server._request("GET", "/v2/models/slow/config")
        assert status == 200
        assert json.loads(body)["parameters"]["delay_ms"] == {"string_value": "20"}
        assert [m["state"] for m in server.models() if m["name"] == "slow"] == ["READY"]
        with pytest.raises(RuntimeError, match="no configuration for 'echo'"):
            server.reload_with_parameter("echo", "delay_ms", "20")  # not loaded
