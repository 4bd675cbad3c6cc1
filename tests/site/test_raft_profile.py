"""MESH_RAFT_PROFILE: the tuned Raft timing by default, PySyncObj's own timing as a benchmark baseline."""

from __future__ import annotations

from types import SimpleNamespace

from django.test import override_settings
from pysyncobj import SyncObjConf

from meshcore.replication.raft import TUNED_TIMING, RaftSettings, Replica

TIMING = (
    "commandsWaitLeader",
    "appendEntriesUseBatch",
    "autoTickPeriod",
    "appendEntriesPeriod",
    "raftMinTimeout",
    "raftMaxTimeout",
    "connectionRetryTime",
    "connectionTimeout",
    "leaderFallbackTimeout",
)


def conf(tmp_path) -> SyncObjConf:
    projection = SimpleNamespace(project_group=None, rebuild_from=None, announce=None)
    settings = RaftSettings(address="127.0.0.1:1", peers=(), password="p" * 16, data_dir=tmp_path / "raft")
    return Replica(settings, projection)._conf()


def test_the_default_profile_is_tuned_for_latency(tmp_path):
    tuned = conf(tmp_path)
    assert {name: getattr(tuned, name) for name in TIMING} == TUNED_TIMING
    assert tuned.appendEntriesUseBatch is False
    assert tuned.commandsWaitLeader is False
    assert tuned.autoTickPeriod < SyncObjConf().autoTickPeriod


@override_settings(MESH_RAFT_PROFILE="pysyncobj-defaults")
def test_the_baseline_profile_restores_only_pysyncobjs_timing(tmp_path):
    baseline, library = conf(tmp_path), SyncObjConf()
    assert {name: getattr(baseline, name) for name in TIMING} == {name: getattr(library, name) for name in TIMING}
    # Safety is not timing: the same in both profiles.
    assert baseline.password == "p" * 16
    assert baseline.journalFile == str(tmp_path / "raft" / "journal")
    assert baseline.useFork is False
