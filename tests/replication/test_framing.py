"""PySyncObj's messages framed without compression when small, and still readable by any zlib reader."""

from __future__ import annotations

import os
import zlib

import pytest
from pysyncobj import tcp_connection

from devtools.waiting import wait_until
from meshcore.replication import framing
from tests.replication.test_replica_in_process import EMPTY_BATCH, running_replicas


@pytest.mark.parametrize("size", [0, 1, 414, 65_535, 65_536, 200_000])
def test_a_stored_stream_is_what_zlib_itself_makes_and_reads(size):
    data = os.urandom(size)

    framed = framing.stored_zlib(data)

    assert zlib.decompress(framed) == data
    if size < framing.COMPRESS_FROM:
        # The sizes framed this way: byte for byte what zlib writes at level 0, which every PySyncObj peer reads.
        assert framed == zlib.compress(data, 0)
    else:
        assert len(framed) < size + 64  # stored blocks of up to 64 KiB, not compressed


def test_small_messages_are_stored_and_large_ones_compressed():
    small = b"a" * (framing.COMPRESS_FROM - 1)
    large = b"a" * framing.COMPRESS_FROM

    stored = framing._PySyncObjZlib.compress(small, 3)
    compressed = framing._PySyncObjZlib.compress(large, 3)

    assert len(stored) > len(small) and zlib.decompress(stored) == small
    assert len(compressed) < len(large) // 10 and zlib.decompress(compressed) == large


def test_install_replaces_the_zlib_pysyncobjs_connections_use(monkeypatch):
    monkeypatch.setattr(tcp_connection, "zlib", zlib)  # put back after the test, whatever install does

    framing.install()

    assert tcp_connection.zlib is framing._PySyncObjZlib
    assert tcp_connection.zlib.decompress is zlib.decompress


@pytest.mark.django_db(transaction=True)
def test_replicas_commit_small_and_large_entries_with_the_framing(monkeypatch):
    sent: list[tuple[int, bool]] = []  # (size, compressed) of every message PySyncObj framed
    real_compress = framing._PySyncObjZlib.compress

    def recording(data: bytes, level: int = -1) -> bytes:
        framed = real_compress(data, level)
        sent.append((len(data), framed[1] != 0x01))  # stored streams carry the level-0 header byte
        return framed

    monkeypatch.setattr(framing._PySyncObjZlib, "compress", staticmethod(recording))
    with running_replicas(3, monkeypatch) as replicas:
        assert tcp_connection.zlib is framing._PySyncObjZlib  # a tuned replica installed it
        leader = _leader_of(replicas)
        small = leader.propose({**EMPTY_BATCH, "key": "small"}, timeout=10)
        # A batch larger than COMPRESS_FROM: its append to each follower is compressed.
        large = leader.propose({**EMPTY_BATCH, "key": "large", "note": "x" * 40_000}, timeout=10)
        assert small["status"] == large["status"] == "ok"
        wait_until(lambda: len({replica.state.seq for replica in replicas}) == 1, 10, "the replicas did not converge")

    assert any(not compressed for _, compressed in sent), "no small message was framed"
    assert any(compressed and size >= framing.COMPRESS_FROM for size, compressed in sent), "nothing was compressed"


def _leader_of(replicas):
    replicas[0].wait_for_leader(timeout=30)
    return next(replica for replica in replicas if replica.status()["role"] == "leader")
