"""Cluster tests run several replica processes on 2 shared cores; a timing-bound wait can lose.

Each such test gets one rerun (pytest-rerunfailures): a genuine defect fails twice, and the
rerun is reported in pytest's summary ("R"), so a flake stays visible instead of hidden.
In-process tests of the state machine and the guards get no rerun.
"""

import pytest

IN_PROCESS = {"test_desired_state.py", "test_direct_writes_fail.py"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.parent.name == "replication" and item.path.name not in IN_PROCESS:
            item.add_marker(pytest.mark.flaky(reruns=1, reruns_delay=2))
