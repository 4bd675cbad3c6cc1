"""`python -m agents.probe`: one sample as JSON on stdout, timings on stderr, exit 1 when no GPU is seen."""

from __future__ import annotations

import json

import pynvml

from agents import gpus, probe
from tests.agents.fake_pynvml import FakeNvml


def test_it_prints_the_collectors_sample_and_times_further_reads(capsys):
    assert probe.main(["--gpus", "simulated", "--samples", "3", "--interval", "0"]) == 0
    out, err = capsys.readouterr()
    sample = json.loads(out)
    assert [gpu["simulated"] for gpu in sample["gpus"]] == [True, True]
    assert "collect() over 3 calls: p50" in err


def test_it_fails_when_nvml_sees_no_gpu(capsys, monkeypatch):
    without_driver = FakeNvml(init_error=pynvml.NVMLError_LibraryNotFound)
    monkeypatch.setattr(probe, "make_gpu_collector", lambda mode: gpus.make_gpu_collector(mode, nvml=without_driver))
    assert probe.main(["--gpus", "nvml"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["nvml"]["status"], report["gpus"]) == ("missing", [])
