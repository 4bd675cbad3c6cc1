"""How long events are kept: `prune_events` and the background part that runs it.

Events older than MESH_EVENT_RETENTION_DAYS go, and so do the oldest rows beyond
MESH_EVENT_RETENTION_MAX. Each replica prunes its own database from a thread of `serve`,
so no Celery beat is needed.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connections
from django.db.models import QuerySet
from django.utils import timezone

from meshcore.models import Event

logger = logging.getLogger(__name__)

# Rows per DELETE: short statements keep the database free for the writes that matter (SQLite has one writer).
PRUNE_BATCH = 1000


def _delete_in_batches(events: QuerySet[Event]) -> int:
    deleted = 0
    while True:
        ids = list(events.order_by("pk").values_list("pk", flat=True)[:PRUNE_BATCH])
        if not ids:
            return deleted
        deleted += Event.objects.filter(pk__in=ids).delete()[0]


def prune_events(now: datetime | None = None) -> int:
    """Delete events past the retention age and the oldest beyond the row limit; the number deleted."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.MESH_EVENT_RETENTION_DAYS)
    deleted = _delete_in_batches(Event.objects.filter(created_at__lt=cutoff))
    keep = settings.MESH_EVENT_RETENTION_MAX
    # Ids grow with insertion, so the newest `keep` rows are those above the first one left out.
    boundary = list(Event.objects.order_by("-pk").values_list("pk", flat=True)[keep : keep + 1])
    if boundary:
        deleted += _delete_in_batches(Event.objects.filter(pk__lte=boundary[0]))
    return deleted


class EventPruner:
    """A background part of `serve`: a daemon thread that prunes events every few minutes."""

    name = "event pruner"

    def __init__(self, interval: float | None = None, first_run_after: float = 5.0) -> None:
        self.interval = interval
        self.first_run_after = first_run_after
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        interval = self.interval if self.interval is not None else settings.MESH_EVENT_PRUNE_INTERVAL
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, args=(interval,), name="infermesh-event-pruner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self, interval: float) -> None:
        delay = self.first_run_after
        while not self._stopping.wait(delay):
            self._prune_once()
            delay = interval

    def _prune_once(self) -> None:
        """One pass; a failure is logged and retried at the next interval, never ends the thread."""
        try:
            deleted = prune_events()
        except Exception:
            logger.exception("pruning events failed; the next pass tries again")
            return
        finally:
            # This thread's connections would otherwise stay open between passes.
            connections.close_all()
        if deleted:
            logger.info("pruned %d event(s) past the retention limits", deleted)
