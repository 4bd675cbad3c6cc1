"""make_gpu_collector: which collector each mode gives, and what "auto" picks on a host."""

from __future__ import annotations

import pynvml
import pytest

from agents.gpus import make_gpu_collector
from tests.agents.fake_pynvml import FakeNvml, a100

RUNTIMES = [{"name": "triton", "live": True, "ready": True, "models": []}]


def choices_logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "agents.gpus"]


def test_it_chooses_simulated_gpus_in_auto_mode_when_nvml_is_missing():
    collector = make_gpu_collector(
        "auto", simulated_count=3, nvml=FakeNvml(init_error=pynvml.NVMLError_LibraryNotFound)
    )

    report = collector.collect(RUNTIMES)

    assert report["nvml"]["status"] == "simulated"
    assert "NVML is missing" in report["nvml"]["detail"]
    assert [gpu["simulated"] for gpu in report["gpus"]] == [True, True, True]


def test_it_chooses_nvml_in_auto_mode_when_it_sees_a_gpu():
    collector = make_gpu_collector("auto", nvml=FakeNvml([a100(0), a100(1)]))

    report = collector.collect(RUNTIMES)

    assert report["nvml"]["status"] == "ok"
    assert [gpu["uuid"] for gpu in report["gpus"]] == [
        "GPU-a100a100-0000-0000-0000-000000000000",
        "GPU-a100a100-0000-0000-0000-000000000001",
    ]


def test_it_chooses_simulated_gpus_in_auto_mode_when_nvml_sees_no_gpu():
    fake = FakeNvml([])
    collector = make_gpu_collector("auto", nvml=fake)

    report = collector.collect()

    assert report["nvml"] == {"status": "simulated", "detail": "NVML sees no GPU on this host"}
    assert fake.shutdown_calls == 1


def test_it_logs_the_auto_choice_once(caplog):
    collector = make_gpu_collector("auto", nvml=FakeNvml(init_error=pynvml.NVMLError_DriverNotLoaded))

    for _ in range(3):
        collector.collect()

    (message,) = choices_logged(caplog)
    assert message.startswith("GPU collector: 2 simulated GPU(s), because NVML is missing")


def test_it_keeps_the_auto_choice_when_nvml_fails_later():
    fake = FakeNvml([a100()])
    collector = make_gpu_collector("auto", nvml=fake)
    collector.collect()
    fake.devices = []

    report = collector.collect()

    assert report["nvml"]["status"] == "ok"
    assert report["gpus"] == []


def test_it_reports_nvml_missing_in_nvml_mode_without_falling_back():
    collector = make_gpu_collector("nvml", nvml=FakeNvml(init_error=pynvml.NVMLError_LibraryNotFound))

    report = collector.collect(RUNTIMES)

    assert report["nvml"]["status"] == "missing"
    assert report["gpus"] == []


def test_it_gives_simulated_gpus_for_the_node_in_simulated_mode():
    fake = FakeNvml([a100()])
    collector = make_gpu_collector("simulated", simulated_count=1, node_name="gpu-a", nvml=fake)

    report = collector.collect(RUNTIMES)

    assert report["nvml"]["status"] == "simulated"
    assert report["gpus"][0]["uuid"].startswith("SIM-")
    assert fake.init_calls == 0


def test_it_shuts_nvml_down_when_closed():
    fake = FakeNvml([a100()])
    collector = make_gpu_collector("auto", nvml=fake)
    collector.collect()

    collector.close()

    assert fake.shutdown_calls == 1


def test_it_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="use one of auto, nvml, simulated"):
        make_gpu_collector("cuda")
