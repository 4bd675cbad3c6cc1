"""The Raft port's encryption: AES-256-GCM-SIV in place of PySyncObj's Fernet, reading both.

PySyncObj encrypts every message with Fernet (AES-128-CBC, then HMAC-SHA256, base64): 22 µs
to seal a message and 37 µs to open one on the development machine (2026-11-27), almost all
of it setting up a new CBC context, and a commit has six of them on its path. AES-GCM-SIV,
from the same `cryptography` package, seals or opens a message in one call of about 2 µs.

A token is: version (1 byte, 0x01), PySyncObj's timestamp (8 bytes, big-endian), a random
nonce (12 bytes), then the sealed message with its tag. The version and the timestamp are
authenticated with the message. GCM-SIV keeps a repeated random nonce harmless (it would
show only that two messages were equal), so random nonces need no counter across restarts.

The key is derived from the shared password as PySyncObj derives Fernet's (PBKDF2-HMAC-SHA256,
PySyncObj's salt, 100,000 rounds), then separated for this cipher with HKDF. Fernet tokens
(what replicas of releases before this one send, and PySyncObj's own tools) are read too, so
a rolling upgrade works; `MESH_RAFT_CIPHER=fernet` makes a replica send them as well, for
as long as replicas of such a release remain in the cluster.
"""

from __future__ import annotations

import base64
import os
import struct
from functools import cache

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from pysyncobj.encryptor import SALT as PYSYNCOBJ_SALT

CIPHERS = ("aes-gcm-siv", "fernet")  # what a replica sends (MESH_RAFT_CIPHER); it reads both

VERSION = b"\x01"  # a Fernet token starts with b"g" (0x80, base64-encoded)
_HEADER = struct.Struct(">cQ")  # version, timestamp
_NONCE_BYTES = 12
_TAG_BYTES = 16


class RaftCipher:
    """PySyncObj's encryptor interface (`encrypt_at_time`, `extract_timestamp`, `decrypt`), as above."""

    def __init__(self, password: str, send: str = "aes-gcm-siv") -> None:
        if send not in CIPHERS:
            raise ValueError(f"unknown Raft cipher {send!r}; one of: {', '.join(CIPHERS)}")
        fernet_key, aead_key = _keys(password)
        self._fernet = Fernet(fernet_key)
        self._aead = AESGCMSIV(aead_key)
        self._send_fernet = send == "fernet"
        # The token `extract_timestamp` last opened, and its message: PySyncObj opens each token twice in a row.
        self._opened: tuple[bytes | None, bytes] = (None, b"")

    def encrypt_at_time(self, data: bytes, current_time: int) -> bytes:
        if self._send_fernet:
            return self._fernet.encrypt_at_time(data, current_time)
        header = _HEADER.pack(VERSION, current_time)
        nonce = os.urandom(_NONCE_BYTES)
        return header + nonce + self._aead.encrypt(nonce, data, header)

    def extract_timestamp(self, token: bytes) -> int:
        """The token's timestamp, once the token is known to be authentic (InvalidToken otherwise)."""
        if token[:1] != VERSION:
            return self._fernet.extract_timestamp(token)
        self._opened = (token, self._open(token))
        return _HEADER.unpack_from(token)[1]

    def decrypt(self, token: bytes, ttl: int | None = None) -> bytes:
        """The token's message (InvalidToken if it is not authentic); `ttl` applies to Fernet tokens only."""
        if token[:1] != VERSION:
            return self._fernet.decrypt(token, ttl)
        opened_token, message = self._opened
        if opened_token is token:
            return message
        return self._open(token)

    def _open(self, token: bytes) -> bytes:
        header_end = _HEADER.size
        nonce_end = header_end + _NONCE_BYTES
        if len(token) < nonce_end + _TAG_BYTES:
            raise InvalidToken
        try:
            return self._aead.decrypt(token[header_end:nonce_end], token[nonce_end:], token[:header_end])
        except InvalidTag:
            raise InvalidToken from None


@cache
def _keys(password: str) -> tuple[bytes, bytes]:
    """Fernet's key exactly as PySyncObj derives it, and this cipher's own key from the same secret."""
    secret = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=PYSYNCOBJ_SALT, iterations=100_000).derive(
        password.encode()
    )
    aead_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"infermesh raft aes-gcm-siv").derive(secret)
    return base64.urlsafe_b64encode(secret), aead_key
