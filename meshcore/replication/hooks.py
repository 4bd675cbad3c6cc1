"""What the projection tells the layers above it, through hooks they register at app start.

Replication sits below events, live state and routing and never imports them: once a batch
is in this replica's database, the projection calls these hooks (meshcore/apps.py registers
them). A hook receives plain data (batches and their results), never a lock or a transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Batch = dict[str, Any]
Result = dict[str, Any]
# Records a projected batch's events in the caller's transaction; returns what to publish later.
RecordEvents = Callable[[Batch, Result], list[Any]]
# Publishes recorded events (after the transaction committed).
PublishEvents = Callable[[list[Any]], None]
# Told of the batches just projected into this database (caches to forget, views to refresh);
# None when the whole database was rebuilt from a snapshot.
AfterProjection = Callable[[list[tuple[Batch, Result]] | None], None]


class ProjectionHooks:
    """The hooks of this process: one event recorder and publisher, any number of listeners."""

    def __init__(self) -> None:
        self.record_events: RecordEvents = lambda batch, result: []
        self.publish_events: PublishEvents = lambda events: None
        self.after_projection: list[AfterProjection] = []

    def set_events(self, record: RecordEvents, publish: PublishEvents) -> None:
        self.record_events, self.publish_events = record, publish

    def add_listener(self, listener: AfterProjection) -> None:
        if listener not in self.after_projection:
            self.after_projection.append(listener)

    def projected(self, batches: list[tuple[Batch, Result]] | None) -> None:
        for listener in self.after_projection:
            listener(batches)


projection_hooks = ProjectionHooks()
