"""Reports: a snapshot first, deltas after, heartbeats, retries that lose nothing."""

from __future__ import annotations

import threading
import time

import pytest

from agents.report import Backoff, LatestSamples, ReportBuilder, Reporter, SendFailed


def gpu(uuid="GPU-1", util=10, name="H100"):
    return {"uuid": uuid, "index": 0, "info": {"name": name}, "metrics": {"utilization_gpu_pct": util}}


def rt(state="READY"):
    return {"name": "triton", "url": "http://x", "live": True, "ready": True, "models": [{"name": "m", "state": state}]}


class Sink:
    def __init__(self):
        self.reports = []
        self.failures = 0  # how many sends to fail before succeeding
        self.answer = {"status": "accepted"}
        self.block = None

    def send(self, report):
        if self.block is not None:
            self.block.wait()
        self.reports.append(report)
        if self.failures:
            self.failures -= 1
            raise SendFailed("control plane down")
        return dict(self.answer)


@pytest.fixture
def parts():
    samples = LatestSamples()
    builder = ReportBuilder("gpu-01", interval_s=1.0)
    sink = Sink()
    return samples, builder, sink, Reporter(builder, samples, sink, backoff=Backoff(first_s=0.01, max_s=0.05))


def test_the_first_report_is_a_snapshot_then_deltas_name_only_what_changed(parts):
    samples, _, sink, reporter = parts
    samples.set_gpus({"status": "ok"}, [gpu("GPU-1"), gpu("GPU-2")])
    samples.set_runtimes([rt()])
    reporter.send_once()
    samples.set_gpus({"status": "ok"}, [gpu("GPU-1", util=90), gpu("GPU-2")])
    reporter.send_once()
    first, second = sink.reports
    assert first["kind"] == "snapshot" and len(first["gpus"]) == 2 and first["runtimes"] == [rt()]
    assert second["kind"] == "delta"
    assert second["seq"] == first["seq"] + 1
    assert second["gpus"] == [{"uuid": "GPU-1", "index": 0, "metrics": {"utilization_gpu_pct": 90}}]
    assert second["runtimes"] == [] and second["removed_gpus"] == []


def test_nothing_changed_gives_a_heartbeat(parts):
    samples, _, sink, reporter = parts
    samples.set_gpus({"status": "ok"}, [gpu()])
    reporter.send_once()
    reporter.send_once()
    heartbeat = sink.reports[-1]
    assert heartbeat["kind"] == "delta"
    assert heartbeat["gpus"] == [] and heartbeat["runtimes"] == []
    assert heartbeat["interval_s"] == 1.0


def test_changed_inventory_and_removals_are_reported(parts):
    samples, _, sink, reporter = parts
    samples.set_gpus({"status": "ok"}, [gpu("GPU-1"), gpu("GPU-2")])
    samples.set_runtimes([rt()])
    reporter.send_once()
    samples.set_gpus({"status": "ok"}, [gpu("GPU-1", name="renamed")])
    samples.set_runtimes([])
    reporter.send_once()
    delta = sink.reports[-1]
    assert delta["gpus"] == [gpu("GPU-1", name="renamed")]  # info included: it changed
    assert delta["removed_gpus"] == ["GPU-2"]
    assert delta["removed_runtimes"] == ["triton"]


def test_a_failed_send_loses_nothing_the_next_delta_carries_it(parts):
    samples, _, sink, reporter = parts
    samples.set_gpus({"status": "ok"}, [gpu(util=1)])
    reporter.send_once()
    samples.set_gpus({"status": "ok"}, [gpu(util=2)])
    sink.failures = 1
    assert reporter.send_once() is False
    samples.set_runtimes([rt()])
    assert reporter.send_once() is True
    delivered = sink.reports[-1]
    assert delivered["kind"] == "delta"
    assert delivered["gpus"][0]["metrics"]["utilization_gpu_pct"] == 2  # the change from the failed report
    assert delivered["runtimes"] == [rt()]


def test_a_snapshot_follows_when_the_control_plane_asks(parts):
    samples, _, sink, reporter = parts
    samples.set_gpus({"status": "ok"}, [gpu()])
    reporter.send_once()
    sink.answer = {"status": "snapshot_required", "snapshot_required": True}
    reporter.send_once()
    sink.answer = {"status": "accepted"}
    reporter.send_once()
    assert [report["kind"] for report in sink.reports] == ["snapshot", "delta", "snapshot"]


def test_a_snapshot_is_sent_periodically(parts):
    samples, builder, sink, reporter = parts
    builder.snapshot_every_s = 0.05
    samples.set_gpus({"status": "ok"}, [gpu()])
    reporter.send_once()
    reporter.send_once()
    time.sleep(0.06)
    reporter.send_once()
    assert [report["kind"] for report in sink.reports] == ["snapshot", "delta", "snapshot"]


def test_backoff_grows_to_its_ceiling_and_resets():
    backoff = Backoff(first_s=1.0, max_s=8.0)
    delays = [backoff.next_delay() for _ in range(6)]
    assert delays[0] == pytest.approx(1.0, rel=0.21)
    assert delays[3] == pytest.approx(8.0, rel=0.21)
    assert delays[5] <= 8.0 * 1.2
    backoff.reset()
    assert backoff.next_delay() == pytest.approx(1.0, rel=0.21)


def test_a_hanging_control_plane_never_blocks_collection(parts):
    samples, _, sink, reporter = parts
    sink.block = threading.Event()
    reporter.start()
    try:
        started = time.monotonic()
        for util in range(50):
            samples.set_gpus({"status": "ok"}, [gpu(util=util)])
            reporter.poke()
        assert time.monotonic() - started < 0.5
        sink.block.set()
        reporter.poke()
        # Once it answers, the newest samples go out, not a backlog of old ones.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not any(
            report["gpus"] and report["gpus"][0]["metrics"]["utilization_gpu_pct"] == 49 for report in sink.reports
        ):
            time.sleep(0.01)
    finally:
        sink.block.set()
        reporter.stop()
    assert len(sink.reports) <= 3
    assert sink.reports[-1]["gpus"][0]["metrics"]["utilization_gpu_pct"] == 49


def test_a_new_agent_run_starts_a_new_sequence():
    first, second = ReportBuilder("gpu-01", 1.0), ReportBuilder("gpu-01", 1.0)
    assert first.agent["id"] != second.agent["id"]
    assert first.build({}, [], [])["seq"] == second.build({}, [], [])["seq"] == 1
