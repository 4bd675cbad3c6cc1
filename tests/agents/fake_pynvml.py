"""A test double of the pynvml module, indistinguishable from it for the collector.

Same function names and signatures, the real constants, the real NVMLError classes (reused from pynvml)
and the real ctypes structs as return values. Devices are described with FakeDevice; a device is its
own NVML handle. A value of None means the device answers NotSupported; `failures` maps a pynvml
function name to the NVMLError class that call raises; a `lost` device raises GpuIsLost everywhere.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any

import pynvml

GIB = 1024**3
MIB = 1024**2


@dataclass
class FakeMigDevice:
    uuid: str
    gpu_instance_id: int
    compute_instance_id: int
    name: str
    memory_total_bytes: int
    memory_used_bytes: int = 0
    gpu_slices: int = 1
    compute_slices: int = 1
    failures: dict[str, type[pynvml.NVMLError]] = field(default_factory=dict)
    lost: bool = False


@dataclass
class FakeDevice:
    uuid: str
    name: str = "NVIDIA A100-SXM4-40GB"
    architecture: int = pynvml.NVML_DEVICE_ARCH_AMPERE
    serial: str | None = "1320321000001"
    vbios_version: str | None = "92.00.45.00.05"
    bus_id: str = "00000000:07:00.0"
    pci_device_id: int = 0x20B010DE
    pci_subsystem_id: int = 0x134F10DE
    compute_capability: tuple[int, int] | None = (8, 0)
    memory_total_bytes: int = 40 * GIB
    memory_used_bytes: int = 1 * GIB
    utilization: tuple[int, int] | None = (37, 12)
    encoder_utilization: int | None = 0
    decoder_utilization: int | None = 3
    temperature_c: int | None = 41
    memory_temperature_c: int | None = 38
    power_usage_mw: int | None = 112_500
    power_limit_mw: int | None = 400_000
    clocks_mhz: dict[int, int] = field(
        default_factory=lambda: {
            pynvml.NVML_CLOCK_GRAPHICS: 1410,
            pynvml.NVML_CLOCK_MEM: 1215,
            pynvml.NVML_CLOCK_SM: 1410,
        }
    )
    performance_state: int | None = 0
    clock_event_reasons: int | None = pynvml.nvmlClocksEventReasonGpuIdle
    fan_speeds_pct: list[int] | None = None
    mig_mode: tuple[int, int] | None = (pynvml.NVML_DEVICE_MIG_DISABLE, pynvml.NVML_DEVICE_MIG_DISABLE)
    max_mig_devices: int | None = 7
    # Slots of MIG devices; None is an empty slot.
    mig_devices: list[FakeMigDevice | None] = field(default_factory=list)
    # (error type, counter type) -> count; None: ECC is off or not on this board.
    ecc_errors: dict[tuple[int, int], int] | None = field(
        default_factory=lambda: {
            (pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_VOLATILE_ECC): 1,
            (pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC): 0,
            (pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_AGGREGATE_ECC): 7,
            (pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_AGGREGATE_ECC): 2,
        }
    )
    # (pid, used bytes or None when the driver cannot tell)
    compute_processes: list[tuple[int, int | None]] | None = field(default_factory=list)
    graphics_processes: list[tuple[int, int | None]] | None = field(default_factory=list)
    failures: dict[str, type[pynvml.NVMLError]] = field(default_factory=dict)
    lost: bool = False
    # Whether the board can be registered for XID error events (NVML answers NotSupported where not).
    xid_events: bool = False


@dataclass
class FakeEventSet:
    """What nvmlEventSetCreate hands out: the devices registered on it, and the events waiting."""

    registered: dict[str, int] = field(default_factory=dict)  # device uuid -> event type mask
    waiting: list[Any] = field(default_factory=list)
    freed: bool = False


def a100(index: int = 0, **overrides: Any) -> FakeDevice:
    """An A100 SXM: no fans (NotSupported), MIG-capable but off."""
    return FakeDevice(
        uuid=f"GPU-a100a100-0000-0000-0000-00000000000{index}", bus_id=f"00000000:0{index + 7}:00.0", **overrides
    )


def h100_with_mig(**overrides: Any) -> FakeDevice:
    """An H100 SXM in MIG mode: fanless, no display, no whole-GPU utilization while MIG is on."""
    values: dict[str, Any] = {
        "uuid": "GPU-8e2c0a8e-1111-2222-3333-444455556666",
        "name": "NVIDIA H100 80GB HBM3",
        "architecture": pynvml.NVML_DEVICE_ARCH_HOPPER,
        "serial": "1654922000123",
        "vbios_version": "96.00.74.00.0B",
        "bus_id": "00000000:19:00.0",
        "pci_device_id": 0x233010DE,
        "pci_subsystem_id": 0x16C110DE,
        "compute_capability": (9, 0),
        "memory_total_bytes": 85_520_809_984,
        "memory_used_bytes": 600 * MIB,
        "utilization": None,
        "power_usage_mw": 98_765,
        "power_limit_mw": 700_000,
        "temperature_c": 35,
        "memory_temperature_c": 33,
        "fan_speeds_pct": None,
        "graphics_processes": None,
        "mig_mode": (pynvml.NVML_DEVICE_MIG_ENABLE, pynvml.NVML_DEVICE_MIG_ENABLE),
        "mig_devices": [
            FakeMigDevice(
                uuid="MIG-aaaa1111-0000-0000-0000-000000000001",
                gpu_instance_id=1,
                compute_instance_id=0,
                name="NVIDIA H100 80GB HBM3 MIG 1g.10gb",
                memory_total_bytes=10_200_547_328,
            ),
            None,
            FakeMigDevice(
                uuid="MIG-aaaa1111-0000-0000-0000-000000000002",
                gpu_instance_id=2,
                compute_instance_id=0,
                name="NVIDIA H100 80GB HBM3 MIG 3g.40gb",
                memory_total_bytes=42_467_328_000,
                memory_used_bytes=5 * GIB,
                gpu_slices=3,
                compute_slices=3,
            ),
        ],
    }
    return FakeDevice(**(values | overrides))


def h200_under_load(**overrides: Any) -> FakeDevice:
    """The H200 that tests/agents/data/nvml_h200_under_load.json was read from, as NVML answered under load.

    No fan speeds (the reading does not tell whether NVML counted no fans or answered NotSupported; both leave
    the field out), MIG off, ECC on, one compute process, clocks held back by the power cap.
    """
    values: dict[str, Any] = {
        "uuid": "GPU-f15a61ee-3ad4-c8f3-98c3-405fff35fc91",
        "name": "NVIDIA H200",
        "architecture": pynvml.NVML_DEVICE_ARCH_HOPPER,
        "serial": "1653824024971",
        "vbios_version": "96.00.A5.00.1A",
        "bus_id": "00000000:00:06.0",
        "pci_device_id": 0x233510DE,
        "pci_subsystem_id": 0x18BF10DE,
        "compute_capability": (9, 0),
        "memory_total_bytes": 150_754_820_096,
        "memory_used_bytes": 27_608_875_008,
        "utilization": (100, 24),
        "encoder_utilization": 0,
        "decoder_utilization": 0,
        "temperature_c": 60,
        "memory_temperature_c": 52,
        "power_usage_mw": 691_273,
        "power_limit_mw": 700_000,
        "clocks_mhz": {pynvml.NVML_CLOCK_GRAPHICS: 1470, pynvml.NVML_CLOCK_MEM: 3201, pynvml.NVML_CLOCK_SM: 1470},
        "performance_state": 0,
        "clock_event_reasons": pynvml.nvmlClocksEventReasonSwPowerCap,
        "fan_speeds_pct": [],
        "ecc_errors": {
            (error, counter): 0
            for error in (pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED)
            for counter in (pynvml.NVML_VOLATILE_ECC, pynvml.NVML_AGGREGATE_ECC)
        },
        "compute_processes": [(1140, 26_954_694_656)],
    }
    return FakeDevice(**(values | overrides))


def lost_gpu(index: int = 0) -> FakeDevice:
    """A GPU that fell off the bus: NVML still counts it, every call on it raises GpuIsLost."""
    return a100(index, lost=True)


class FakeNvml(types.ModuleType):
    """The pynvml module over FakeDevices. `legacy_bytes` answers strings as bytes, like pynvml before 11.5."""

    def __init__(
        self,
        devices: list[FakeDevice] | None = None,
        init_error: type[pynvml.NVMLError] | None = None,
        driver_version: str = "550.54.15",
        cuda_driver_version: int = 12040,
        nvml_version: str = "12.550.54.15",
        legacy_bytes: bool = False,
    ) -> None:
        super().__init__("pynvml")
        self.devices = list(devices or [])
        self.init_error = init_error
        self.driver_version = driver_version
        self.cuda_driver_version = cuda_driver_version
        self.nvml_version = nvml_version
        self.legacy_bytes = legacy_bytes
        self.init_calls = 0
        self.shutdown_calls = 0
        self._refcount = 0
        self.event_sets: list[FakeEventSet] = []

    def raise_xid(self, device: FakeDevice, xid: int) -> None:
        """The driver reports XID `xid` on `device`: every event set it is registered on receives it."""
        for events in self.event_sets:
            if events.registered.get(device.uuid, 0) & pynvml.nvmlEventTypeXidCriticalError and not events.freed:
                # Shaped like pynvml's c_nvmlEventData_t (whose `device` field cannot hold a FakeDevice).
                events.waiting.append(
                    types.SimpleNamespace(
                        device=device,
                        eventType=pynvml.nvmlEventTypeXidCriticalError,
                        eventData=xid,
                        gpuInstanceId=0xFFFFFFFF,
                        computeInstanceId=0xFFFFFFFF,
                    )
                )

    # -- library and system --

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.init_error is not None:
            raise self.init_error()
        self._refcount += 1

    def nvmlShutdown(self) -> None:
        self._check_initialised()
        self.shutdown_calls += 1
        self._refcount -= 1

    def nvmlSystemGetDriverVersion(self) -> str | bytes:
        self._check_initialised()
        return self._string(self.driver_version)

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._check_initialised()
        return self.cuda_driver_version

    def nvmlSystemGetNVMLVersion(self) -> str | bytes:
        self._check_initialised()
        return self._string(self.nvml_version)

    def nvmlDeviceGetCount(self) -> int:
        self._check_initialised()
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeDevice:
        self._check_initialised()
        if not 0 <= index < len(self.devices):
            raise pynvml.NVMLError_InvalidArgument()
        return self.devices[index]

    # -- events --

    def nvmlEventSetCreate(self) -> FakeEventSet:
        self._check_initialised()
        events = FakeEventSet()
        self.event_sets.append(events)
        return events

    def nvmlDeviceRegisterEvents(self, handle: FakeDevice, eventTypes: int, eventSet: FakeEventSet) -> None:
        self._answer(handle, "nvmlDeviceRegisterEvents", True if handle.xid_events else None)
        eventSet.registered[handle.uuid] = eventSet.registered.get(handle.uuid, 0) | eventTypes

    def nvmlEventSetWait_v2(self, eventSet: FakeEventSet, timeoutms: int) -> Any:
        self._check_initialised()
        if eventSet.freed:
            raise pynvml.NVMLError_InvalidArgument()
        if not eventSet.waiting:
            raise pynvml.NVMLError_Timeout()  # what NVML answers when no event came within the timeout
        return eventSet.waiting.pop(0)

    def nvmlEventSetWait(self, eventSet: FakeEventSet, timeoutms: int) -> Any:
        return self.nvmlEventSetWait_v2(eventSet, timeoutms)

    def nvmlEventSetFree(self, eventSet: FakeEventSet) -> None:
        self._check_initialised()
        eventSet.freed = True

    # -- identity and inventory --

    def nvmlDeviceGetName(self, handle: FakeDevice | FakeMigDevice) -> str | bytes:
        return self._string(self._answer(handle, "nvmlDeviceGetName", handle.name))

    def nvmlDeviceGetUUID(self, handle: FakeDevice | FakeMigDevice) -> str | bytes:
        return self._string(self._answer(handle, "nvmlDeviceGetUUID", handle.uuid))

    def nvmlDeviceGetArchitecture(self, device: FakeDevice) -> int:
        return self._answer(device, "nvmlDeviceGetArchitecture", device.architecture)

    def nvmlDeviceGetSerial(self, handle: FakeDevice) -> str | bytes:
        return self._string(self._answer(handle, "nvmlDeviceGetSerial", handle.serial))

    def nvmlDeviceGetVbiosVersion(self, handle: FakeDevice) -> str | bytes:
        return self._string(self._answer(handle, "nvmlDeviceGetVbiosVersion", handle.vbios_version))

    def nvmlDeviceGetPciInfo(self, handle: FakeDevice) -> pynvml.nvmlPciInfo_t:
        self._answer(handle, "nvmlDeviceGetPciInfo", True)
        bus_id = handle.bus_id.encode()
        return pynvml.nvmlPciInfo_t(
            busIdLegacy=bus_id[-12:],
            domain=int(handle.bus_id[:8], 16),
            bus=int(handle.bus_id[9:11], 16),
            device=int(handle.bus_id[12:14], 16),
            pciDeviceId=handle.pci_device_id,
            pciSubSystemId=handle.pci_subsystem_id,
            busId=bus_id,
        )

    def nvmlDeviceGetCudaComputeCapability(self, handle: FakeDevice) -> tuple[int, int]:
        return self._answer(handle, "nvmlDeviceGetCudaComputeCapability", handle.compute_capability)

    def nvmlDeviceGetAttributes(self, device: FakeMigDevice) -> pynvml.c_nvmlDeviceAttributes:
        self._answer(device, "nvmlDeviceGetAttributes", True)
        return pynvml.c_nvmlDeviceAttributes(
            gpuInstanceSliceCount=device.gpu_slices,
            computeInstanceSliceCount=device.compute_slices,
            memorySizeMB=device.memory_total_bytes // MIB,
        )

    # -- metrics --

    def nvmlDeviceGetMemoryInfo(
        self, handle: FakeDevice | FakeMigDevice, version: int | None = None
    ) -> pynvml.c_nvmlMemory_t:
        self._answer(handle, "nvmlDeviceGetMemoryInfo", True)
        used = handle.memory_used_bytes
        return pynvml.c_nvmlMemory_t(total=handle.memory_total_bytes, free=handle.memory_total_bytes - used, used=used)

    def nvmlDeviceGetUtilizationRates(self, handle: FakeDevice) -> pynvml.c_nvmlUtilization_t:
        gpu, memory = self._answer(handle, "nvmlDeviceGetUtilizationRates", handle.utilization)
        return pynvml.c_nvmlUtilization_t(gpu=gpu, memory=memory)

    def nvmlDeviceGetEncoderUtilization(self, handle: FakeDevice) -> list[int]:
        return [self._answer(handle, "nvmlDeviceGetEncoderUtilization", handle.encoder_utilization), 167_000]

    def nvmlDeviceGetDecoderUtilization(self, handle: FakeDevice) -> list[int]:
        return [self._answer(handle, "nvmlDeviceGetDecoderUtilization", handle.decoder_utilization), 167_000]

    def nvmlDeviceGetTemperature(self, handle: FakeDevice, sensor: int) -> int:
        if sensor != pynvml.NVML_TEMPERATURE_GPU:
            raise pynvml.NVMLError_InvalidArgument()
        return self._answer(handle, "nvmlDeviceGetTemperature", handle.temperature_c)

    def nvmlDeviceGetFieldValues(self, handle: FakeDevice, fieldIds: list[int]) -> list[pynvml.c_nvmlFieldValue_t]:
        self._answer(handle, "nvmlDeviceGetFieldValues", True)
        values = []
        for field_id in fieldIds:
            value = pynvml.c_nvmlFieldValue_t(fieldId=field_id, valueType=pynvml.NVML_VALUE_TYPE_UNSIGNED_INT)
            known = handle.memory_temperature_c if field_id == pynvml.NVML_FI_DEV_MEMORY_TEMP else None
            # NVML answers per field: the call succeeds, each value carries its own return code.
            if known is None:
                value.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
            else:
                value.nvmlReturn = pynvml.NVML_SUCCESS
                value.value.uiVal = known
            values.append(value)
        return values

    def nvmlDeviceGetPowerUsage(self, handle: FakeDevice) -> int:
        return self._answer(handle, "nvmlDeviceGetPowerUsage", handle.power_usage_mw)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: FakeDevice) -> int:
        return self._answer(handle, "nvmlDeviceGetEnforcedPowerLimit", handle.power_limit_mw)

    def nvmlDeviceGetClockInfo(self, handle: FakeDevice, type: int) -> int:
        return self._answer(handle, "nvmlDeviceGetClockInfo", handle.clocks_mhz.get(type))

    def nvmlDeviceGetPerformanceState(self, handle: FakeDevice) -> int:
        return self._answer(handle, "nvmlDeviceGetPerformanceState", handle.performance_state)

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: FakeDevice) -> int:
        return self._answer(handle, "nvmlDeviceGetCurrentClocksEventReasons", handle.clock_event_reasons)

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: FakeDevice) -> int:
        return self._answer(handle, "nvmlDeviceGetCurrentClocksThrottleReasons", handle.clock_event_reasons)

    def nvmlDeviceGetNumFans(self, device: FakeDevice) -> int:
        return len(self._answer(device, "nvmlDeviceGetNumFans", device.fan_speeds_pct))

    def nvmlDeviceGetFanSpeed_v2(self, handle: FakeDevice, fan: int) -> int:
        speeds = self._answer(handle, "nvmlDeviceGetFanSpeed_v2", handle.fan_speeds_pct)
        if not 0 <= fan < len(speeds):
            raise pynvml.NVMLError_InvalidArgument()
        return speeds[fan]

    def nvmlDeviceGetTotalEccErrors(self, handle: FakeDevice, errorType: int, counterType: int) -> int:
        counts = self._answer(handle, "nvmlDeviceGetTotalEccErrors", handle.ecc_errors)
        return counts[(errorType, counterType)]

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeDevice) -> list[pynvml.nvmlFriendlyObject]:
        return _processes(self._answer(handle, "nvmlDeviceGetComputeRunningProcesses", handle.compute_processes))

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: FakeDevice) -> list[pynvml.nvmlFriendlyObject]:
        return _processes(self._answer(handle, "nvmlDeviceGetGraphicsRunningProcesses", handle.graphics_processes))

    # -- MIG --

    def nvmlDeviceGetMigMode(self, device: FakeDevice) -> list[int]:
        return list(self._answer(device, "nvmlDeviceGetMigMode", device.mig_mode))

    def nvmlDeviceGetMaxMigDeviceCount(self, device: FakeDevice) -> int:
        return self._answer(device, "nvmlDeviceGetMaxMigDeviceCount", device.max_mig_devices)

    def nvmlDeviceGetMigDeviceHandleByIndex(self, device: FakeDevice, index: int) -> FakeMigDevice:
        slots = self._answer(device, "nvmlDeviceGetMigDeviceHandleByIndex", device.mig_devices)
        if not 0 <= index < (device.max_mig_devices or 0):
            raise pynvml.NVMLError_InvalidArgument()
        if index >= len(slots) or slots[index] is None:
            raise pynvml.NVMLError_NotFound()
        return slots[index]

    def nvmlDeviceGetGpuInstanceId(self, device: FakeMigDevice) -> int:
        if not isinstance(device, FakeMigDevice):
            raise pynvml.NVMLError_InvalidArgument()
        return self._answer(device, "nvmlDeviceGetGpuInstanceId", device.gpu_instance_id)

    def nvmlDeviceGetComputeInstanceId(self, device: FakeMigDevice) -> int:
        if not isinstance(device, FakeMigDevice):
            raise pynvml.NVMLError_InvalidArgument()
        return self._answer(device, "nvmlDeviceGetComputeInstanceId", device.compute_instance_id)

    # -- plumbing --

    def _check_initialised(self) -> None:
        if self._refcount <= 0:
            raise pynvml.NVMLError_Uninitialized()

    def _answer(self, handle: FakeDevice | FakeMigDevice, function: str, value: Any) -> Any:
        self._check_initialised()
        if handle.lost:
            raise pynvml.NVMLError_GpuIsLost()
        if function in handle.failures:
            raise handle.failures[function]()
        if value is None:
            raise pynvml.NVMLError_NotSupported()
        return value

    def _string(self, value: str) -> str | bytes:
        return value.encode() if self.legacy_bytes else value


def _processes(running: list[tuple[int, int | None]]) -> list[pynvml.nvmlFriendlyObject]:
    # pynvml turns NVML's "not available" memory value into None, and answers these friendly objects.
    return [
        pynvml.nvmlFriendlyObject(
            {"pid": pid, "usedGpuMemory": used, "gpuInstanceId": 0xFFFFFFFF, "computeInstanceId": 0xFFFFFFFF}
        )
        for pid, used in running
    ]


# The real constants and error classes, so the collector cannot tell the double from pynvml.
for _name in dir(pynvml):
    if _name.startswith(("NVML_", "NVMLError", "nvmlClocksEventReason", "nvmlClocksThrottleReason", "nvmlEventType")):
        setattr(FakeNvml, _name, getattr(pynvml, _name))
