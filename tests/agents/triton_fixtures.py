"""A real tritonserver (CPU, from the nvidia-pytriton wheel) for the agent's Triton tests.

- triton: one server for the session, explicit model control, `echo` and `slow` loaded.
  Its repository is examples/models plus `lifecycle`, a copy of `echo` that tests load,
  unload and reload without disturbing the others.
- fresh_triton: a server of its own, nothing loaded, for a test that leaves Triton changed
  for good (a failed load keeps the server unready).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
import tritonclient.http.aio as triton_http

from agents.triton import TritonCollector
from devtools.triton_server import EXAMPLE_MODELS, LocalTriton

T = TypeVar("T")


@pytest.fixture(scope="session")
def triton_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("triton") / "models"
    shutil.copytree(EXAMPLE_MODELS, repository, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(repository / "echo", repository / "lifecycle")
    config = repository / "lifecycle" / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "echo"', 'name: "lifecycle"'))
    return repository


@pytest.fixture(scope="session")
def triton(triton_repository: Path) -> Iterator[LocalTriton]:
    with LocalTriton(triton_repository, load_models=["echo", "slow"]) as server:
        yield server


@pytest.fixture
def fresh_triton(triton_repository: Path) -> Iterator[LocalTriton]:
    with LocalTriton(triton_repository) as server:
        yield server


@pytest.fixture
async def collector(triton: LocalTriton) -> AsyncIterator[TritonCollector]:
    collector = TritonCollector(triton.http_url, triton.metrics_url)
    yield collector
    await collector.close()


@pytest.fixture
async def triton_client(triton: LocalTriton) -> AsyncIterator[triton_http.InferenceServerClient]:
    """A plain tritonclient, as an application sending inference requests would use."""
    client = triton_http.InferenceServerClient(triton.http_url.removeprefix("http://"))
    yield client
    await client.close()


async def infer(client: triton_http.InferenceServerClient, model: str, values: list[float]) -> np.ndarray:
    """One real inference request to an example model (INPUT0 → OUTPUT0, FP32)."""
    data = np.array(values, dtype=np.float32)
    tensor = triton_http.InferInput("INPUT0", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    result = await client.infer(model, [tensor])
    return result.as_numpy("OUTPUT0")


async def until(probe: Callable[[], Awaitable[T]], check: Callable[[T], bool], timeout_s: float = 15.0) -> T:
    """Probe until `check` holds; fail with the last value seen after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if check(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"still not there after {timeout_s:g} s; last seen: {value!r}")
        await asyncio.sleep(0.02)


async def triton_counts(client: triton_http.InferenceServerClient, model: str) -> tuple[int, int]:
    """(successes, failures) Triton's own statistics hold for `model`, all versions."""
    statistics = await client.get_inference_statistics(model)
    totals = [entry["inference_stats"] for entry in statistics["model_stats"]]
    return sum(int(t["success"]["count"]) for t in totals), sum(int(t["fail"]["count"]) for t in totals)


async def until_counted(
    client: triton_http.InferenceServerClient, model: str, successes: int, failures: int = 0
) -> None:
    """Wait until Triton has counted the requests it answered: it counts each just after its answer."""
    await until(lambda: triton_counts(client, model), lambda counts: counts[0] >= successes and counts[1] >= failures)
