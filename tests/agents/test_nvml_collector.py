"""NvmlCollector against a pynvml test double: fields, absent vs error, lost GPUs, missing NVML, MIG."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pynvml

from agents.nvml import NvmlCollector
from tests.agents.fake_pynvml import (
    GIB,
    MIB,
    FakeDevice,
    FakeMigDevice,
    FakeNvml,
    a100,
    h100_with_mig,
    h200_under_load,
    lost_gpu,
)

DATA = Path(__file__).parent / "data"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def only_gpu(fake: FakeNvml) -> dict:
    (gpu,) = NvmlCollector(fake).collect()["gpus"]
    return gpu


def warnings_from(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "agents.nvml" and r.levelno == logging.WARNING]


def test_it_reports_every_field_of_a_full_device():
    device = FakeDevice(
        uuid="GPU-0f0f0f0f-1111-2222-3333-444444444444",
        name="NVIDIA RTX 6000 Ada Generation",
        architecture=pynvml.NVML_DEVICE_ARCH_ADA,
        serial="1792823012345",
        vbios_version="95.02.5D.00.01",
        bus_id="00000000:41:00.0",
        pci_device_id=0x26B110DE,
        pci_subsystem_id=0x16A110DE,
        compute_capability=(8, 9),
        memory_total_bytes=48 * GIB,
        memory_used_bytes=3 * GIB,
        utilization=(64, 21),
        encoder_utilization=5,
        decoder_utilization=7,
        temperature_c=62,
        memory_temperature_c=58,
        power_usage_mw=187_250,
        power_limit_mw=300_000,
        clocks_mhz={pynvml.NVML_CLOCK_GRAPHICS: 2505, pynvml.NVML_CLOCK_MEM: 10001, pynvml.NVML_CLOCK_SM: 2505},
        performance_state=2,
        clock_event_reasons=pynvml.nvmlClocksEventReasonSwPowerCap,
        fan_speeds_pct=[30, 31],
        compute_processes=[(4242, 1 * GIB)],
        graphics_processes=[(1717, 256 * MIB)],
    )

    gpu = only_gpu(FakeNvml([device]))

    assert gpu == {
        "uuid": "GPU-0f0f0f0f-1111-2222-3333-444444444444",
        "index": 0,
        "simulated": False,
        "info": {
            "name": "NVIDIA RTX 6000 Ada Generation",
            "architecture": "ada",
            "serial": "1792823012345",
            "vbios_version": "95.02.5D.00.01",
            "pci": {"bus_id": "00000000:41:00.0", "device_id": "0x26B110DE", "subsystem_id": "0x16A110DE"},
            "memory_total_bytes": 48 * GIB,
            "power_limit_w": 300.0,
            "compute_capability": "8.9",
            "mig_mode": {"current": "disabled", "pending": "disabled"},
        },
        "metrics": {
            "memory_used_bytes": 3 * GIB,
            "memory_free_bytes": 45 * GIB,
            "utilization_gpu_pct": 64,
            "utilization_memory_pct": 21,
            "encoder_utilization_pct": 5,
            "decoder_utilization_pct": 7,
            "temperature_gpu_c": 62,
            "temperature_memory_c": 58,
            "power_usage_w": 187.25,
            "clocks_mhz": {"graphics": 2505, "memory": 10001, "sm": 2505},
            "performance_state": 2,
            "throttle_reasons": ["sw_power_cap"],
            "fan_speeds_pct": [30, 31],
            "ecc_errors": {
                "corrected_volatile": 1,
                "uncorrected_volatile": 0,
                "corrected_aggregate": 7,
                "uncorrected_aggregate": 2,
            },
            "processes": [
                {"pid": 4242, "type": "compute", "used_memory_bytes": 1 * GIB},
                {"pid": 1717, "type": "graphics", "used_memory_bytes": 256 * MIB},
            ],
        },
        "errors": {},
    }


def test_it_reports_the_driver_cuda_and_nvml_versions():
    fake = FakeNvml([a100()], driver_version="570.86.15", cuda_driver_version=12080, nvml_version="12.570.86.15")

    report = NvmlCollector(fake).collect()

    assert report["nvml"] == {
        "status": "ok",
        "driver_version": "570.86.15",
        "cuda_version": "12.8",
        "nvml_version": "12.570.86.15",
    }


def test_it_leaves_unsupported_fields_out_without_calling_them_errors():
    gpu = only_gpu(FakeNvml([h100_with_mig()]))

    for field in ("fan_speeds_pct", "utilization_gpu_pct", "utilization_memory_pct"):
        assert field not in gpu["metrics"]
    assert gpu["errors"] == {}


def test_it_treats_a_function_the_driver_lacks_as_unsupported():
    device = a100(failures={"nvmlDeviceGetArchitecture": pynvml.NVMLError_FunctionNotFound})

    gpu = only_gpu(FakeNvml([device]))

    assert "architecture" not in gpu["info"]
    assert gpu["errors"] == {}


def test_it_leaves_fans_out_of_a_gpu_that_has_none():
    gpu = only_gpu(FakeNvml([a100(fan_speeds_pct=[])]))

    assert "fan_speeds_pct" not in gpu["metrics"]


def test_it_names_other_failures_in_errors():
    device = a100(
        failures={
            "nvmlDeviceGetPowerUsage": pynvml.NVMLError_GpuIsLost,
            "nvmlDeviceGetTotalEccErrors": pynvml.NVMLError_NoPermission,
        }
    )

    gpu = only_gpu(FakeNvml([device]))

    assert "power_usage_w" not in gpu["metrics"]
    assert "ecc_errors" not in gpu["metrics"]
    assert gpu["errors"] == {
        "power_usage_w": "GPU is lost",
        "ecc_errors.corrected_volatile": "Insufficient Permissions",
        "ecc_errors.uncorrected_volatile": "Insufficient Permissions",
        "ecc_errors.corrected_aggregate": "Insufficient Permissions",
        "ecc_errors.uncorrected_aggregate": "Insufficient Permissions",
    }


def test_it_names_every_field_of_a_failed_compound_call_in_errors():
    device = a100(failures={"nvmlDeviceGetMemoryInfo": pynvml.NVMLError_Unknown})

    gpu = only_gpu(FakeNvml([device]))

    assert "memory_total_bytes" not in gpu["info"]
    assert gpu["errors"] == {
        "memory_total_bytes": "Unknown Error",
        "memory_used_bytes": "Unknown Error",
        "memory_free_bytes": "Unknown Error",
    }


def test_it_skips_a_lost_gpu_and_reports_the_others(caplog):
    fake = FakeNvml([a100(0), lost_gpu(1), a100(2)])

    gpus = NvmlCollector(fake).collect()["gpus"]

    assert [(gpu["index"], gpu["uuid"]) for gpu in gpus] == [
        (0, "GPU-a100a100-0000-0000-0000-000000000000"),
        (2, "GPU-a100a100-0000-0000-0000-000000000002"),
    ]
    assert warnings_from(caplog) == ["GPU 1 left out of reports: NVML cannot identify it (GPU is lost)"]


def test_it_warns_about_a_lost_gpu_once_while_it_stays_lost(caplog):
    collector = NvmlCollector(FakeNvml([lost_gpu(0), a100(1)]))

    for _ in range(3):
        collector.collect()

    assert len(warnings_from(caplog)) == 1


def test_it_reports_nvml_missing_when_the_library_is_not_found():
    report = NvmlCollector(FakeNvml([a100()], init_error=pynvml.NVMLError_LibraryNotFound)).collect()

    assert report["nvml"]["status"] == "missing"
    assert "NVML Shared Library Not Found" in report["nvml"]["detail"]
    assert report["gpus"] == []


def test_it_reports_nvml_missing_when_the_driver_is_not_loaded():
    report = NvmlCollector(FakeNvml([a100()], init_error=pynvml.NVMLError_DriverNotLoaded)).collect()

    assert report["nvml"]["status"] == "missing"


def test_it_reports_nvml_missing_when_pynvml_is_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)

    report = NvmlCollector().collect()

    assert report["nvml"]["status"] == "missing"
    assert "nvidia-ml-py" in report["nvml"]["detail"]
    assert report["gpus"] == []


def test_it_reports_other_init_failures_as_errors_with_detail():
    report = NvmlCollector(FakeNvml([a100()], init_error=pynvml.NVMLError_NoPermission)).collect()

    assert report["nvml"] == {"status": "error", "detail": "NVML failed to initialise: Insufficient Permissions"}


def test_it_logs_missing_nvml_once_across_collects(caplog):
    fake = FakeNvml(init_error=pynvml.NVMLError_LibraryNotFound)
    collector = NvmlCollector(fake, retry_init_s=0)

    for _ in range(3):
        collector.collect()

    assert fake.init_calls == 3
    assert len(warnings_from(caplog)) == 1


def test_it_retries_initialising_nvml_after_the_retry_interval():
    clock = FakeClock()
    fake = FakeNvml([a100()], init_error=pynvml.NVMLError_DriverNotLoaded)
    collector = NvmlCollector(fake, retry_init_s=60, now=clock)
    collector.collect()
    fake.init_error = None

    clock.now += 30
    too_soon = collector.collect()
    clock.now += 31
    after_interval = collector.collect()

    assert too_soon["nvml"]["status"] == "missing"
    assert after_interval["nvml"]["status"] == "ok"
    assert len(after_interval["gpus"]) == 1


def test_it_initialises_nvml_on_the_first_collect_not_before():
    fake = FakeNvml([a100()])
    collector = NvmlCollector(fake)
    assert fake.init_calls == 0

    collector.collect()
    collector.collect()

    assert fake.init_calls == 1


def test_it_shuts_nvml_down_on_close():
    fake = FakeNvml([a100()])
    collector = NvmlCollector(fake)
    collector.collect()

    collector.close()

    assert fake.shutdown_calls == 1


def test_it_lists_mig_instances_with_their_profiles():
    gpu = only_gpu(FakeNvml([h100_with_mig()]))

    assert gpu["info"]["mig_mode"] == {"current": "enabled", "pending": "enabled"}
    assert gpu["mig_instances"] == [
        {
            "uuid": "MIG-aaaa1111-0000-0000-0000-000000000001",
            "gpu_instance_id": 1,
            "compute_instance_id": 0,
            "profile": "1g.10gb",
            "memory_total_bytes": 10_200_547_328,
            "memory_used_bytes": 0,
        },
        {
            "uuid": "MIG-aaaa1111-0000-0000-0000-000000000002",
            "gpu_instance_id": 2,
            "compute_instance_id": 0,
            "profile": "3g.40gb",
            "memory_total_bytes": 42_467_328_000,
            "memory_used_bytes": 5 * GIB,
        },
    ]
    assert gpu["errors"] == {}


def test_it_derives_a_mig_profile_from_slices_when_the_name_lacks_it():
    instance = FakeMigDevice(
        uuid="MIG-bbbb",
        gpu_instance_id=5,
        compute_instance_id=1,
        name="NVIDIA H100 80GB HBM3",
        memory_total_bytes=19_968 * MIB,
        gpu_slices=2,
        compute_slices=1,
    )

    gpu = only_gpu(FakeNvml([h100_with_mig(mig_devices=[instance])]))

    assert [i["profile"] for i in gpu["mig_instances"]] == ["1c.2g.20gb"]


def test_it_leaves_mig_instances_out_when_mig_is_off():
    gpu = only_gpu(FakeNvml([a100()]))

    assert gpu["info"]["mig_mode"] == {"current": "disabled", "pending": "disabled"}
    assert "mig_instances" not in gpu


def test_it_decodes_throttle_reason_names():
    mask = pynvml.nvmlClocksEventReasonSwPowerCap | pynvml.nvmlClocksEventReasonHwThermalSlowdown | 0x8000

    gpu = only_gpu(FakeNvml([a100(clock_event_reasons=mask)]))

    assert gpu["metrics"]["throttle_reasons"] == ["sw_power_cap", "hw_thermal_slowdown", "unknown_0x8000"]


def test_it_reads_throttle_reasons_under_their_older_name_on_older_drivers():
    device = a100(
        clock_event_reasons=pynvml.nvmlClocksThrottleReasonGpuIdle,
        failures={"nvmlDeviceGetCurrentClocksEventReasons": pynvml.NVMLError_FunctionNotFound},
    )

    gpu = only_gpu(FakeNvml([device]))

    assert gpu["metrics"]["throttle_reasons"] == ["gpu_idle"]


def test_it_reports_processes_whose_memory_the_driver_cannot_tell():
    gpu = only_gpu(FakeNvml([a100(compute_processes=[(4242, None), (4343, 512 * MIB)])]))

    assert gpu["metrics"]["processes"] == [
        {"pid": 4242, "type": "compute"},
        {"pid": 4343, "type": "compute", "used_memory_bytes": 512 * MIB},
    ]


def test_it_decodes_strings_from_older_pynvml():
    fake = FakeNvml([a100()], legacy_bytes=True)

    report = NvmlCollector(fake).collect()

    (gpu,) = report["gpus"]
    assert gpu["uuid"] == "GPU-a100a100-0000-0000-0000-000000000000"
    assert gpu["info"]["name"] == "NVIDIA A100-SXM4-40GB"
    assert report["nvml"]["driver_version"] == "550.54.15"


def test_it_reports_an_error_when_nvml_cannot_count_the_gpus():
    def count_fails() -> int:
        raise pynvml.NVMLError_Unknown()

    fake = FakeNvml([a100()])
    fake.nvmlDeviceGetCount = count_fails

    report = NvmlCollector(fake).collect()

    assert report["nvml"]["status"] == "error"
    assert report["nvml"]["detail"] == "NVML cannot count GPUs: Unknown Error"
    assert report["gpus"] == []


def test_the_double_answers_like_the_real_h200_it_was_modelled_on():
    # Read by `python -m agents.probe` on an NVIDIA H200 (driver 580.159.04) running a bf16 matmul loop.
    real = json.loads((DATA / "nvml_h200_under_load.json").read_text())
    fake = NvmlCollector(
        FakeNvml(
            [h200_under_load()], driver_version="580.159.04", cuda_driver_version=13000, nvml_version="13.580.159.04"
        )
    ).collect()
    assert fake == real


def test_it_reports_xid_errors_as_they_arrive_for_the_gpus_that_have_them():
    watched, plain = a100(0, xid_events=True), a100(1)
    fake = FakeNvml([watched, plain])
    collector = NvmlCollector(fake)

    first = {gpu["uuid"]: gpu["metrics"] for gpu in collector.collect()["gpus"]}
    fake.raise_xid(watched, 79)
    fake.raise_xid(watched, 48)
    second = {gpu["uuid"]: gpu["metrics"] for gpu in collector.collect()["gpus"]}
    third = {gpu["uuid"]: gpu["metrics"] for gpu in collector.collect()["gpus"]}

    assert first[watched.uuid]["xid_errors"] == {"count": 0}
    assert "xid_errors" not in first[plain.uuid]  # NotSupported: absent, not zero
    assert second[watched.uuid]["xid_errors"]["count"] == 2
    assert second[watched.uuid]["xid_errors"]["last"] == 48
    assert second[watched.uuid]["xid_errors"]["last_at"] > 0
    assert third[watched.uuid]["xid_errors"] == second[watched.uuid]["xid_errors"]  # kept, not counted again
    assert "xid_errors" not in second[plain.uuid]


def test_it_frees_its_event_set_when_it_closes():
    fake = FakeNvml([a100(0, xid_events=True)])
    collector = NvmlCollector(fake)
    collector.collect()
    collector.close()

    assert [events.freed for events in fake.event_sets] == [True]
    collector.collect()  # initialised again: a new event set
    assert [events.freed for events in fake.event_sets] == [True, False]
