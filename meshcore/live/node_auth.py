"""Node tokens for agent reports, checked against a short-lived in-process cache.

A node reports every second; looking its token up in the database each time would be
most of the cost. An answer is kept for a minute; each replica forgets them all when it
applies a token rotation, revocation or node deletion, so such a token stops working at
once there (and within the minute on a process that applies no log).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from meshcore.models import NodeToken
from meshcore.tokens import NODE_TOKEN_PREFIX, token_digest

# Batches with one of these events change which node a token belongs to.
TOKEN_CHANGES = {"NODE_TOKEN_ROTATED", "NODE_TOKEN_REVOKED", "NODE_LEFT"}


class NodeTokenCache:
    def __init__(self, ttl_s: float = 60.0, negative_ttl_s: float = 1.0, max_entries: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.negative_ttl_s = negative_ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[str | None, float]] = {}
        self._lock = threading.Lock()

    def cached(self, token: str) -> tuple[bool, str | None]:
        """(known, node name): known is False when the database must be asked."""
        entry = self._entries.get(token_digest(token))
        if entry is None or entry[1] < time.monotonic():
            return False, None
        return True, entry[0]

    def lookup(self, token: str) -> str | None:
        """The node this token belongs to, or None; asks the database (call from sync code)."""
        digest = token_digest(token)
        node = None
        if token.startswith(NODE_TOKEN_PREFIX):
            row = NodeToken.objects.filter(digest=digest, revoked_at__isnull=True).values_list("node__name").first()
            node = row[0] if row else None
        ttl = self.ttl_s if node else self.negative_ttl_s
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()  # a flood of made-up tokens must not grow memory without bound
            self._entries[digest] = (node, time.monotonic() + ttl)
        return node

    def forget_all(self) -> None:
        with self._lock:
            self._entries.clear()


node_tokens = NodeTokenCache()


def forget_tokens_on_change(batches: list[tuple[dict[str, Any], dict[str, Any]]] | None) -> None:
    """A projection hook: a rotated or revoked node token stops working here at once, not when cached entries expire."""
    if batches is None or any(
        spec.get("type") in TOKEN_CHANGES for batch, _ in batches for spec in batch.get("events", [])
    ):
        node_tokens.forget_all()
