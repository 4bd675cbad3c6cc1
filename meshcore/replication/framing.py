"""Cheaper framing for PySyncObj's messages: small ones go as zlib streams of stored blocks.

PySyncObj compresses every message it sends with `zlib.compress(data, 3)`. A control plane's
Raft messages are a few hundred bytes, and setting up a deflate stream costs about 60 µs each
time: more than pickling, encrypting and sending the message together, and a commit sends
several (an append to each follower, their answers). Below `COMPRESS_FROM` bytes a message
is written as a zlib stream of stored (uncompressed) blocks instead. That is still a valid
zlib stream, so the receiving side (PySyncObj's own `zlib.decompress`) reads it unchanged,
from a replica of this release or of an earlier one. Larger messages, such as the snapshot
a joining replica receives, are still compressed.
"""

from __future__ import annotations

import struct
import zlib

# Below this many bytes a message is sent uncompressed: deflate would save little on the wire.
COMPRESS_FROM = 16 * 1024
_ZLIB_HEADER = b"\x78\x01"  # deflate with a 32 KiB window, no dictionary; 0x7801 is a multiple of 31
_MAX_STORED_BLOCK = 0xFFFF


def stored_zlib(data: bytes) -> bytes:
    """`data` as a zlib stream of stored blocks (RFC 1950/1951), as `zlib.compress(data, 0)` writes it."""
    parts = [_ZLIB_HEADER]
    view = memoryview(data)
    offset = 0
    while True:
        block = view[offset : offset + _MAX_STORED_BLOCK]
        offset += len(block)
        final = offset >= len(data)
        # BFINAL in bit 0, BTYPE 00 (stored); then LEN and its one's complement, little-endian.
        parts.append(struct.pack("<BHH", final, len(block), len(block) ^ 0xFFFF))
        parts.append(block)
        if final:
            break
    parts.append(struct.pack(">I", zlib.adler32(data)))
    return b"".join(parts)


class _PySyncObjZlib:
    """Stands in for the `zlib` module inside `pysyncobj.tcp_connection` (the only names it uses)."""

    decompress = staticmethod(zlib.decompress)

    @staticmethod
    def compress(data: bytes, level: int = -1) -> bytes:
        if len(data) < COMPRESS_FROM:
            return stored_zlib(data)
        return zlib.compress(data, level)


def install() -> None:
    """Frame this process's PySyncObj messages with `stored_zlib` when they are small (idempotent)."""
    from pysyncobj import tcp_connection

    tcp_connection.zlib = _PySyncObjZlib
