"""Secrets for API clients and node agents: made here, shown once, stored as SHA-256.

The tokens are 256 random bits, so a fast hash is as safe as a slow one and lets every
agent report and proxied request be checked cheaply (a slow password hash is for secrets
people choose).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

API_TOKEN_PREFIX = "imt_"
NODE_TOKEN_PREFIX = "imn_"
VISIBLE_PREFIX_LENGTH = 12


@dataclass(frozen=True)
class NewSecret:
    value: str  # shown to the user once, never stored
    digest: str
    prefix: str


def token_digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _new_secret(kind_prefix: str) -> NewSecret:
    value = kind_prefix + secrets.token_urlsafe(32)
    return NewSecret(value=value, digest=token_digest(value), prefix=value[:VISIBLE_PREFIX_LENGTH])


def new_api_token() -> NewSecret:
    return _new_secret(API_TOKEN_PREFIX)


def new_node_token() -> NewSecret:
    return _new_secret(NODE_TOKEN_PREFIX)
