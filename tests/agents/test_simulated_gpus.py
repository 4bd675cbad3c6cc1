"""SimulatedGpus: marked simulated, idle without load, following the runtimes' load up and back down."""

from __future__ import annotations

import pytest

from agents.simulated import GIB, IDLE_POWER_W, RESERVED_MEMORY_BYTES, SimulatedGpus


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def model(name: str, inference_per_s=None, compute_time_ms=None, queue_depth: int = 0, state: str = "READY") -> dict:
    return {
        "name": name,
        "version": "1",
        "state": state,
        "reason": "",
        "stats": {"queue_depth": queue_depth, "inference_per_s": inference_per_s, "compute_time_ms": compute_time_ms},
    }


def triton(*models: dict) -> list[dict]:
    return [{"name": "triton", "live": True, "ready": True, "error": None, "models": list(models)}]


# 40 inferences/s of 25 ms each keep one GPU busy.
ONE_GPU_OF_WORK = triton(model("resnet", inference_per_s=40.0, compute_time_ms=25.0))


def run(gpus: SimulatedGpus, clock: FakeClock, runtimes: list[dict] | None, seconds: int) -> dict:
    """Collect once a second for `seconds`, as the agent would; the last report."""
    report = {}
    for _ in range(seconds):
        clock.now += 1.0
        report = gpus.collect(runtimes)
    return report


def metrics(report: dict, index: int = 0) -> dict:
    return report["gpus"][index]["metrics"]


def test_it_marks_every_gpu_simulated_with_a_sim_uuid():
    report = SimulatedGpus(count=3).collect()

    assert report["nvml"]["status"] == "simulated"
    assert [gpu["simulated"] for gpu in report["gpus"]] == [True, True, True]
    assert all(gpu["uuid"].startswith("SIM-") for gpu in report["gpus"])
    assert len({gpu["uuid"] for gpu in report["gpus"]}) == 3


def test_it_keeps_uuids_stable_per_node_and_index():
    first = [gpu["uuid"] for gpu in SimulatedGpus(node_name="gpu-a").collect()["gpus"]]
    again = [gpu["uuid"] for gpu in SimulatedGpus(node_name="gpu-a").collect()["gpus"]]
    other_node = [gpu["uuid"] for gpu in SimulatedGpus(node_name="gpu-b").collect()["gpus"]]

    assert first == again
    assert set(first).isdisjoint(other_node)


def test_it_reports_idle_values_without_load():
    clock = FakeClock()
    gpus = SimulatedGpus(count=2, memory_total_bytes=24 * GIB, now=clock)

    report = run(gpus, clock, None, 30)

    gpu = report["gpus"][1]
    assert gpu["info"] == {"name": "Simulated GPU 24GB", "memory_total_bytes": 24 * GIB, "power_limit_w": 300.0}
    assert gpu["metrics"] == {
        "memory_used_bytes": RESERVED_MEMORY_BYTES,
        "memory_free_bytes": 24 * GIB - RESERVED_MEMORY_BYTES,
        "utilization_gpu_pct": 0,
        "utilization_memory_pct": 0,
        "temperature_gpu_c": 30,
        "power_usage_w": IDLE_POWER_W,
        "clocks_mhz": {"graphics": 210, "memory": 405, "sm": 210},
        "performance_state": 8,
    }


def test_it_raises_utilization_power_and_temperature_with_load():
    clock = FakeClock()
    gpus = SimulatedGpus(count=1, now=clock)
    idle = metrics(run(gpus, clock, None, 5))

    loaded = metrics(run(gpus, clock, ONE_GPU_OF_WORK, 120))

    assert loaded["utilization_gpu_pct"] == 100
    assert loaded["power_usage_w"] > idle["power_usage_w"] + 200
    assert loaded["temperature_gpu_c"] > idle["temperature_gpu_c"] + 40
    assert loaded["performance_state"] == 0


def test_it_lets_temperature_lag_behind_utilization():
    clock = FakeClock()
    gpus = SimulatedGpus(count=1, now=clock)
    gpus.collect()

    early = metrics(run(gpus, clock, ONE_GPU_OF_WORK, 8))

    assert early["utilization_gpu_pct"] >= 95
    assert early["temperature_gpu_c"] < 50


def test_it_spreads_the_load_over_the_gpus():
    clock = FakeClock()
    gpus = SimulatedGpus(count=2, now=clock)

    report = run(gpus, clock, ONE_GPU_OF_WORK, 30)

    assert [metrics(report, i)["utilization_gpu_pct"] for i in (0, 1)] == [50, 50]


def test_it_counts_queued_requests_as_load():
    clock = FakeClock()
    calm, queued = SimulatedGpus(count=2, now=clock), SimulatedGpus(count=2, now=clock)
    calm_load = triton(model("resnet", inference_per_s=20.0, compute_time_ms=25.0, queue_depth=0))
    queued_load = triton(model("resnet", inference_per_s=20.0, compute_time_ms=25.0, queue_depth=10))

    for _ in range(30):
        clock.now += 1.0
        calm_report, queued_report = calm.collect(calm_load), queued.collect(queued_load)

    assert metrics(calm_report)["utilization_gpu_pct"] == 25
    assert metrics(queued_report)["utilization_gpu_pct"] == 50


def test_it_falls_back_to_idle_when_the_load_stops():
    clock = FakeClock()
    gpus = SimulatedGpus(count=1, now=clock)
    run(gpus, clock, ONE_GPU_OF_WORK, 120)

    after = metrics(run(gpus, clock, triton(model("resnet", inference_per_s=0.0, compute_time_ms=0.0)), 300))

    assert after["utilization_gpu_pct"] == 0
    assert after["temperature_gpu_c"] == 30
    assert after["power_usage_w"] == pytest.approx(IDLE_POWER_W, abs=0.1)
    assert after["performance_state"] == 8


def test_it_treats_models_without_rates_yet_as_idle():
    clock = FakeClock()
    gpus = SimulatedGpus(count=1, now=clock)

    report = run(gpus, clock, triton(model("resnet", inference_per_s=None, compute_time_ms=None)), 30)

    assert metrics(report)["utilization_gpu_pct"] == 0


def test_it_grows_memory_with_ready_models():
    loaded = triton(model("a"), model("b"), model("c"), model("d", state="UNAVAILABLE"), model("e", state="LOADING"))

    report = SimulatedGpus(count=2).collect(loaded)

    assert [metrics(report, i)["memory_used_bytes"] for i in (0, 1)] == [RESERVED_MEMORY_BYTES + 3 * 2 * GIB] * 2


def test_it_caps_memory_below_the_total():
    many = triton(*(model(f"m{i}") for i in range(50)))

    used = metrics(SimulatedGpus(count=1, memory_total_bytes=24 * GIB).collect(many))["memory_used_bytes"]

    assert used < 24 * GIB


def test_it_gives_the_same_samples_for_the_same_inputs_and_elapsed_time():
    def replay() -> list[dict]:
        clock = FakeClock()
        gpus = SimulatedGpus(count=2, now=clock)
        reports = []
        for step, runtimes in enumerate([None, ONE_GPU_OF_WORK, ONE_GPU_OF_WORK, None, ONE_GPU_OF_WORK]):
            clock.now += 0.5 + step
            reports.append(gpus.collect(runtimes))
        return reports

    assert replay() == replay()


def test_it_rejects_a_host_without_gpus():
    with pytest.raises(ValueError, match="at least one GPU"):
        SimulatedGpus(count=0)
