"""GPU metrics from NVML: one GpuSample per GPU, in the shape docs/telemetry.md fixes.

Runs on GPU hosts without Django. The pynvml module is injectable so tests can hand in a test double.
A field the GPU does not support is left out; a field that failed for another reason is left out and
named in the sample's `errors`.
"""

from __future__ import annotations

import importlib
import logging
import math
import re
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_INIT_S = 60.0

# nvmlDeviceArchitecture_t values from nvml.h.
ARCHITECTURES = {
    2: "kepler",
    3: "maxwell",
    4: "pascal",
    5: "volta",
    6: "turing",
    7: "ampere",
    8: "ada",
    9: "hopper",
    10: "blackwell",
    13: "rubin",
}

# nvmlClocksEventReason* bits from nvml.h (board_limit and reliability exist under the older "throttle" names).
CLOCK_EVENT_REASONS = (
    (0x001, "gpu_idle"),
    (0x002, "applications_clocks_setting"),
    (0x004, "sw_power_cap"),
    (0x008, "hw_slowdown"),
    (0x010, "sync_boost"),
    (0x020, "sw_thermal_slowdown"),
    (0x040, "hw_thermal_slowdown"),
    (0x080, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
    (0x200, "board_limit"),
    (0x400, "reliability"),
)

NVML_PSTATE_UNKNOWN = 32

# XID events taken per collect at most: a GPU in an error storm must not hold up the report.
MAX_XID_EVENTS_PER_COLLECT = 100

# nvmlValueType_t -> the member of the nvmlValue_t union that holds the value.
_FIELD_VALUE_MEMBERS = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}

# A MIG device's name ends with its profile: "NVIDIA H100 80GB HBM3 MIG 1g.10gb".
_MIG_PROFILE_IN_NAME = re.compile(r"\bMIG (\S+)$")


def _text(value: str | bytes) -> str:
    # pynvml before 11.5 returned bytes for strings.
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _watts(milliwatts: int) -> float:
    return milliwatts / 1000


def _architecture(value: int) -> str:
    return ARCHITECTURES.get(value, "unknown")


def _compute_capability(value: tuple[int, int]) -> str:
    major, minor = value
    return f"{major}.{minor}"


def _sampled_utilization(value: tuple[int, int]) -> int:
    # Encoder/decoder utilization comes with its sampling period in microseconds, which the report does not carry.
    utilization, _period_us = value
    return utilization


def _performance_state(value: int) -> int | None:
    return None if value == NVML_PSTATE_UNKNOWN else value


def _cuda_version(value: int) -> str:
    # NVML encodes CUDA 12.4 as 12040.
    return f"{value // 1000}.{value % 1000 // 10}"


def clock_event_reason_names(mask: int) -> list[str]:
    """The names of the bits set in a clocks event (throttle) reasons mask; unknown bits by their hex value."""
    names = [name for bit, name in CLOCK_EVENT_REASONS if mask & bit]
    unknown = mask & ~sum(bit for bit, _ in CLOCK_EVENT_REASONS)
    names.extend(f"unknown_{1 << shift:#x}" for shift in range(unknown.bit_length()) if unknown & (1 << shift))
    return names


# Fields that are one call on the device handle: (section, field, pynvml function, conversion).
# A conversion that answers None leaves the field out.
_SCALAR_FIELDS: tuple[tuple[str, str, str, Callable[[Any], Any]], ...] = (
    ("info", "name", "nvmlDeviceGetName", _text),
    ("info", "architecture", "nvmlDeviceGetArchitecture", _architecture),
    ("info", "serial", "nvmlDeviceGetSerial", _text),
    ("info", "vbios_version", "nvmlDeviceGetVbiosVersion", _text),
    ("info", "compute_capability", "nvmlDeviceGetCudaComputeCapability", _compute_capability),
    ("info", "power_limit_w", "nvmlDeviceGetEnforcedPowerLimit", _watts),
    ("metrics", "encoder_utilization_pct", "nvmlDeviceGetEncoderUtilization", _sampled_utilization),
    ("metrics", "decoder_utilization_pct", "nvmlDeviceGetDecoderUtilization", _sampled_utilization),
    ("metrics", "power_usage_w", "nvmlDeviceGetPowerUsage", _watts),
    ("metrics", "performance_state", "nvmlDeviceGetPerformanceState", _performance_state),
)


class _FieldReader:
    """Calls pynvml for one device's fields: unsupported ones come back None, failed ones also land in errors."""

    def __init__(self, nvml: ModuleType) -> None:
        self._nvml = nvml
        self._unsupported = (nvml.NVMLError_NotSupported, nvml.NVMLError_FunctionNotFound)
        self.errors: dict[str, str] = {}

    def read(self, names: str | tuple[str, ...], function: Callable[..., T], *args: Any) -> T | None:
        try:
            return function(*args)
        except self._unsupported:
            return None
        except self._nvml.NVMLError as exc:
            for name in (names,) if isinstance(names, str) else names:
                self.errors[name] = str(exc)
            return None


def _put(target: dict, key: str, value: Any) -> None:
    if value is not None:
        target[key] = value


class NvmlCollector:
    """Reads every GPU through NVML. NVML is initialised on the first collect(), in the process that collects."""

    def __init__(
        self,
        nvml: ModuleType | None = None,
        retry_init_s: float = RETRY_INIT_S,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._nvml = nvml
        self._retry_init_s = retry_init_s
        self._now = now
        self._initialised = False
        self._attempted_at: float | None = None
        self._status: dict[str, str] = {"status": "missing", "detail": "NVML has not been initialised yet"}
        self._logged_status: tuple[str, str | None] | None = None
        self._skipped_gpus: set[int] = set()
        self._xid_events: Any = None  # the NVML event set the GPUs' XID errors arrive on
        self._xid_watched: set[str] = set()  # GPUs (uuid) registered for XID events
        self._xids: dict[str, dict[str, Any]] = {}

    def collect(self) -> dict:
        """{"nvml": {...status...}, "gpus": [GpuSample, ...]}; no GPUs when NVML is missing or failed."""
        if not self._ready():
            return {"nvml": dict(self._status), "gpus": []}
        nvml = self._nvml
        try:
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as exc:
            return {"nvml": {**self._status, "status": "error", "detail": f"NVML cannot count GPUs: {exc}"}, "gpus": []}
        if self._xid_events is not None:
            self._take_xid_events()
        samples = (self._gpu(index) for index in range(count))
        return {"nvml": dict(self._status), "gpus": [sample for sample in samples if sample is not None]}

    def close(self) -> None:
        """Shut NVML down; a later collect() initialises it again."""
        self._attempted_at = None
        if not self._initialised:
            return
        self._initialised = False
        if self._xid_events is not None:
            try:
                self._nvml.nvmlEventSetFree(self._xid_events)
            except self._nvml.NVMLError as exc:
                logger.warning("nvmlEventSetFree failed: %s", exc)
            self._xid_events = None
            self._xid_watched.clear()
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError as exc:
            logger.warning("nvmlShutdown failed: %s", exc)

    def _ready(self) -> bool:
        if self._initialised:
            return True
        now = self._now()
        if self._attempted_at is not None and now - self._attempted_at < self._retry_init_s:
            return False
        self._attempted_at = now
        self._status = self._initialise()
        self._initialised = self._status["status"] == "ok"
        self._log_status()
        if self._initialised:
            self._watch_xid_errors()
        return self._initialised

    def _initialise(self) -> dict[str, str]:
        if self._nvml is None:
            try:
                self._nvml = importlib.import_module("pynvml")
            except ImportError as exc:
                return {
                    "status": "missing",
                    "detail": f"the pynvml module is not installed ({exc}): pip install nvidia-ml-py",
                }
        nvml = self._nvml
        try:
            nvml.nvmlInit()
        except (nvml.NVMLError_LibraryNotFound, nvml.NVMLError_DriverNotLoaded) as exc:
            return {
                "status": "missing",
                "detail": f"NVML is not available ({exc}): install the NVIDIA driver, or run with simulated GPUs",
            }
        except nvml.NVMLError as exc:
            return {"status": "error", "detail": f"NVML failed to initialise: {exc}"}
        return {"status": "ok", **self._versions()}

    def _versions(self) -> dict[str, str]:
        nvml = self._nvml
        versions = {}
        for key, function, convert in (
            ("driver_version", "nvmlSystemGetDriverVersion", _text),
            ("cuda_version", "nvmlSystemGetCudaDriverVersion", _cuda_version),
            ("nvml_version", "nvmlSystemGetNVMLVersion", _text),
        ):
            try:
                versions[key] = convert(getattr(nvml, function)())
            except nvml.NVMLError as exc:
                logger.warning("NVML does not tell its %s: %s", key, exc)
        return versions

    def _log_status(self) -> None:
        # Retries repeat the same outcome every minute; only a change is worth a log line.
        status = (self._status["status"], self._status.get("detail"))
        if status == self._logged_status:
            return
        self._logged_status = status
        if self._status["status"] == "ok":
            logger.info(
                "NVML initialised: driver %s, CUDA %s",
                self._status.get("driver_version", "?"),
                self._status.get("cuda_version", "?"),
            )
        else:
            logger.warning(
                "No GPU metrics from NVML (%s): %s. Trying again every %g s.",
                self._status["status"],
                self._status["detail"],
                self._retry_init_s,
            )

    def _watch_xid_errors(self) -> None:
        """Register every GPU that supports it for XID error events (driver-reported faults, e.g. 79: fallen
        off the bus), which NVML offers only as events: each collect takes those that arrived since."""
        nvml = self._nvml
        try:
            events = nvml.nvmlEventSetCreate()
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as exc:
            logger.warning("No XID errors from NVML: cannot create an event set (%s)", exc)
            return
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                uuid = _text(nvml.nvmlDeviceGetUUID(handle))
                nvml.nvmlDeviceRegisterEvents(handle, nvml.nvmlEventTypeXidCriticalError, events)
            except nvml.NVMLError_NotSupported:
                continue
            except nvml.NVMLError as exc:
                logger.info("GPU %d: no XID errors from NVML (%s)", index, exc)  # a lost GPU is warned of per report
                continue
            self._xid_watched.add(uuid)
        self._xid_events = events

    def _take_xid_events(self) -> None:
        nvml = self._nvml
        for _ in range(MAX_XID_EVENTS_PER_COLLECT):
            try:
                event = nvml.nvmlEventSetWait_v2(self._xid_events, 0)
            except nvml.NVMLError_Timeout:
                return  # none left
            except nvml.NVMLError as exc:
                logger.warning("Reading NVML's XID events failed: %s", exc)
                return
            if not event.eventType & nvml.nvmlEventTypeXidCriticalError:
                continue
            try:
                uuid = _text(nvml.nvmlDeviceGetUUID(event.device))
            except nvml.NVMLError:
                continue
            seen = self._xids.setdefault(uuid, {"count": 0})
            seen.update(count=seen["count"] + 1, last=int(event.eventData), last_at=round(time.time(), 3))
            logger.warning("GPU %s reported XID %d", uuid, event.eventData)

    def _gpu(self, index: int) -> dict | None:
        nvml = self._nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(nvml.nvmlDeviceGetUUID(handle))
        except nvml.NVMLError as exc:
            if index not in self._skipped_gpus:
                self._skipped_gpus.add(index)
                logger.warning("GPU %d left out of reports: NVML cannot identify it (%s)", index, exc)
            return None
        if index in self._skipped_gpus:
            self._skipped_gpus.discard(index)
            logger.info("GPU %d (%s) answers NVML again", index, uuid)
        return self._sample(index, handle, uuid)

    def _sample(self, index: int, handle: Any, uuid: str) -> dict:
        nvml = self._nvml
        fields = _FieldReader(nvml)
        info: dict[str, Any] = {}
        metrics: dict[str, Any] = {}
        sections = {"info": info, "metrics": metrics}
        for section, name, function, convert in _SCALAR_FIELDS:
            value = fields.read(name, getattr(nvml, function), handle)
            _put(sections[section], name, None if value is None else convert(value))

        pci = fields.read("pci", nvml.nvmlDeviceGetPciInfo, handle)
        if pci is not None:
            info["pci"] = {
                "bus_id": _text(pci.busId),
                "device_id": f"0x{pci.pciDeviceId:08X}",
                "subsystem_id": f"0x{pci.pciSubSystemId:08X}",
            }
        memory = fields.read(
            ("memory_total_bytes", "memory_used_bytes", "memory_free_bytes"), nvml.nvmlDeviceGetMemoryInfo, handle
        )
        if memory is not None:
            info["memory_total_bytes"] = memory.total
            metrics["memory_used_bytes"] = memory.used
            metrics["memory_free_bytes"] = memory.free
        utilization = fields.read(
            ("utilization_gpu_pct", "utilization_memory_pct"), nvml.nvmlDeviceGetUtilizationRates, handle
        )
        if utilization is not None:
            metrics["utilization_gpu_pct"] = utilization.gpu
            metrics["utilization_memory_pct"] = utilization.memory
        _put(
            metrics,
            "temperature_gpu_c",
            fields.read("temperature_gpu_c", nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU),
        )
        _put(metrics, "temperature_memory_c", fields.read("temperature_memory_c", self._memory_temperature, handle))
        clocks: dict[str, int] = {}
        for name, clock in (
            ("graphics", nvml.NVML_CLOCK_GRAPHICS),
            ("memory", nvml.NVML_CLOCK_MEM),
            ("sm", nvml.NVML_CLOCK_SM),
        ):
            _put(clocks, name, fields.read(f"clocks_mhz.{name}", nvml.nvmlDeviceGetClockInfo, handle, clock))
        if clocks:
            metrics["clocks_mhz"] = clocks
        reasons = fields.read("throttle_reasons", self._clock_event_reasons, handle)
        _put(metrics, "throttle_reasons", None if reasons is None else clock_event_reason_names(reasons))
        _put(metrics, "fan_speeds_pct", fields.read("fan_speeds_pct", self._fan_speeds, handle))
        ecc = self._ecc_errors(fields, handle)
        if ecc:
            metrics["ecc_errors"] = ecc
        _put(metrics, "processes", self._processes(fields, handle))
        if uuid in self._xid_watched:
            metrics["xid_errors"] = dict(self._xids.get(uuid) or {"count": 0})

        sample: dict[str, Any] = {"uuid": uuid, "index": index, "simulated": False, "info": info, "metrics": metrics}
        mig_mode = fields.read("mig_mode", nvml.nvmlDeviceGetMigMode, handle)
        if mig_mode is not None:
            current, pending = mig_mode
            info["mig_mode"] = {"current": self._enabled(current), "pending": self._enabled(pending)}
            if current == nvml.NVML_DEVICE_MIG_ENABLE:
                sample["mig_instances"] = self._mig_instances(fields, handle)
        sample["errors"] = fields.errors
        return sample

    def _enabled(self, mig_mode: int) -> str:
        return "enabled" if mig_mode == self._nvml.NVML_DEVICE_MIG_ENABLE else "disabled"

    def _memory_temperature(self, handle: Any) -> int | float:
        # NVML has no call for HBM/GDDR temperature, only this field value (data-centre GPUs answer, most others not).
        nvml = self._nvml
        (value,) = nvml.nvmlDeviceGetFieldValues(handle, [nvml.NVML_FI_DEV_MEMORY_TEMP])
        if value.nvmlReturn != nvml.NVML_SUCCESS:
            raise nvml.NVMLError(value.nvmlReturn)
        return getattr(value.value, _FIELD_VALUE_MEMBERS[value.valueType])

    def _clock_event_reasons(self, handle: Any) -> int:
        nvml = self._nvml
        try:
            return nvml.nvmlDeviceGetCurrentClocksEventReasons(handle)
        except nvml.NVMLError_FunctionNotFound:
            # Drivers before r535 know the same bitmask only under its older name.
            return nvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle)

    def _fan_speeds(self, handle: Any) -> list[int] | None:
        nvml = self._nvml
        speeds = [nvml.nvmlDeviceGetFanSpeed_v2(handle, fan) for fan in range(nvml.nvmlDeviceGetNumFans(handle))]
        return speeds or None

    def _ecc_errors(self, fields: _FieldReader, handle: Any) -> dict[str, int]:
        nvml = self._nvml
        counts: dict[str, int] = {}
        for kind, error_type in (
            ("corrected", nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED),
            ("uncorrected", nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED),
        ):
            for counter, counter_type in (("volatile", nvml.NVML_VOLATILE_ECC), ("aggregate", nvml.NVML_AGGREGATE_ECC)):
                name = f"{kind}_{counter}"
                count = fields.read(
                    f"ecc_errors.{name}", nvml.nvmlDeviceGetTotalEccErrors, handle, error_type, counter_type
                )
                _put(counts, name, count)
        return counts

    def _processes(self, fields: _FieldReader, handle: Any) -> list[dict] | None:
        nvml = self._nvml
        processes: list[dict] = []
        answered = False
        for kind, function in (
            ("compute", nvml.nvmlDeviceGetComputeRunningProcesses),
            ("graphics", nvml.nvmlDeviceGetGraphicsRunningProcesses),
        ):
            running = fields.read(f"processes.{kind}", function, handle)
            if running is None:
                continue
            answered = True
            for process in running:
                entry = {"pid": process.pid, "type": kind}
                # None when the driver cannot account per process (Windows WDDM, some MIG setups).
                _put(entry, "used_memory_bytes", process.usedGpuMemory)
                processes.append(entry)
        return processes if answered else None

    def _mig_instances(self, fields: _FieldReader, handle: Any) -> list[dict]:
        slots = fields.read("mig_instances", self._nvml.nvmlDeviceGetMaxMigDeviceCount, handle) or 0
        instances = (fields.read(f"mig_instances.{slot}", self._mig_instance, handle, slot) for slot in range(slots))
        return [instance for instance in instances if instance is not None]

    def _mig_instance(self, parent: Any, slot: int) -> dict | None:
        nvml = self._nvml
        try:
            handle = nvml.nvmlDeviceGetMigDeviceHandleByIndex(parent, slot)
        except nvml.NVMLError_NotFound:
            return None  # an empty slot: the GPU holds fewer instances than it could
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        return {
            "uuid": _text(nvml.nvmlDeviceGetUUID(handle)),
            "gpu_instance_id": nvml.nvmlDeviceGetGpuInstanceId(handle),
            "compute_instance_id": nvml.nvmlDeviceGetComputeInstanceId(handle),
            "profile": self._mig_profile(handle),
            "memory_total_bytes": memory.total,
            "memory_used_bytes": memory.used,
        }

    def _mig_profile(self, handle: Any) -> str:
        nvml = self._nvml
        match = _MIG_PROFILE_IN_NAME.search(_text(nvml.nvmlDeviceGetName(handle)))
        if match:
            return match.group(1)
        # Names without the profile still leave its slices and memory, which make the same name ("1c.2g.20gb").
        attributes = nvml.nvmlDeviceGetAttributes(handle)
        gpu_slices, compute_slices = attributes.gpuInstanceSliceCount, attributes.computeInstanceSliceCount
        prefix = f"{compute_slices}c." if compute_slices < gpu_slices else ""
        return f"{prefix}{gpu_slices}g.{math.ceil(attributes.memorySizeMB / 1024)}gb"
