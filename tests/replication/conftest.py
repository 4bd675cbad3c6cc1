"""Cluster tests run several replica processes on 2 shared cores; a timing-bound wait can lose.

Each such test gets one rerun (pytest-rerunfailures): a genuine defect fails twice, and the
rerun is reported in pytest's summary ("R"), so a flake stays visible instead of hidden.
In-process tests of the state machine and the guards get no rerun.
"""

from collections.abc import Iterator

import pytest

from devtools.cluster import Cluster

IN_PROCESS = {"test_desired_state.py", "test_direct_writes_fail.py"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.parent.name == "replication" and item.path.name not in IN_PROCESS:
            item.add_marker(pytest.mark.flaky(reruns=1, reruns_delay=2))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three replicas for the test module, started, with the admin account; without Redis.
    A module that needs other options defines its own `cluster`."""
    with Cluster(tmp_path_factory.mktemp("cluster"), redis_url=None) as cluster:
        cluster.ensure_admin()
        yield cluster


@pytest.fixture(scope="module")
def token(cluster: Cluster) -> str:
    """An API token for the admin of the test module's `cluster`, issued through the second
    replica's control socket (any replica's would do: the token is replicated)."""
    return cluster.issue_token(cluster.replicas[1])
