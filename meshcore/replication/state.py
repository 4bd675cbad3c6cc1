"""The canonical desired state as plain data, and the one function that changes it.

Every replica holds a `DesiredState` and applies the same committed batches in the same
order, so every replica reaches the same state: the function is deterministic (ids are
assigned from counters here, times come from the batch, never from the clock). Checks
that depend on the current state (versions, uniqueness, references) happen here, at
apply time, so a stale or conflicting write is refused identically everywhere.

It is pickled whole at log compaction, so it holds only plain data.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from typing import Any

# Kinds in dependency order: an item refers only to kinds before it.
KINDS = ("group", "user", "node", "node_token", "model", "runtime", "policy", "api_token")

# Fields whose values must be unique among the items of a kind (a tuple is unique together).
UNIQUE: dict[str, tuple[tuple[str, ...], ...]] = {
    "group": (("name",),),
    "user": (("username",),),
    "node": (("name",),),
    "node_token": (("node_id",), ("digest",)),
    "model": (("name", "revision"),),
    "runtime": (("node_id", "name"),),
    "policy": (("name",),),
    "api_token": (("user_id", "name"), ("digest",)),
}

# field -> referenced kind; `cascade` deletes the referrer with its target, otherwise the field is cleared.
REFERENCES: dict[str, dict[str, tuple[str, str]]] = {
    "node_token": {"node_id": ("node", "cascade")},
    "runtime": {"node_id": ("node", "cascade")},
    "policy": {"owner_id": ("user", "clear")},
    "api_token": {"user_id": ("user", "cascade"), "tenant_id": ("group", "clear")},
}

DOCUMENT_FORMAT = "infermesh-desired-state/1"

# The format of log entries this release writes and reads. A release that changes the shape of
# batches raises it and adds an upgrader from the previous format, so entries written by older
# releases, in journals and snapshots, keep applying the same way on every replica.
# Format 2 added group entries, {"format": 2, "group": [batch, ...]}: batches proposed together,
# each applied on its own. A batch itself is unchanged from format 1.
LOG_FORMAT = 2


def _unchanged(batch: dict[str, Any]) -> dict[str, Any]:
    return {**batch, "format": 2}


UPGRADES: dict[int, Any] = {1: _unchanged}  # format n -> function turning a format-n batch into format n + 1

# How many idempotency keys are remembered (a retry comes within seconds; this spans hours of writes).
IDEMPOTENCY_MEMORY = 50_000


class Refused(Exception):
    """A batch that cannot apply to the current state; nothing of it is applied."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# kind -> unique fields -> their values -> the ids of the items that have them (see `DesiredState.unique_index`):
# one id, unless a restored backup or an old database brought duplicates, which writes still refuse to add to.
UniqueIndex = dict[str, dict[tuple[str, ...], dict[tuple[Any, ...], set[int]]]]


class DesiredState:
    # Derived from `items`, built on first use and kept up to date by `apply`; never pickled, so
    # snapshots keep their format and a snapshot from an earlier release needs nothing added.
    _unique_index: UniqueIndex | None = None

    def __init__(self) -> None:
        self.items: dict[str, dict[int, dict[str, Any]]] = {kind: {} for kind in KINDS}
        self.next_id: dict[str, int] = dict.fromkeys(KINDS, 1)
        self.seq = 0
        self.leader: str | None = None
        self.results: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        return {name: value for name, value in self.__dict__.items() if name != "_unique_index"}

    # ---- reading -----------------------------------------------------------------

    def get(self, kind: str, item_id: int) -> dict[str, Any] | None:
        return self.items[kind].get(item_id)

    def find(self, kind: str, **values: Any) -> dict[str, Any] | None:
        for item in self.items[kind].values():
            if all(item.get(field) == value for field, value in values.items()):
                return item
        return None

    def digest(self) -> str:
        """Equal digests mean equal desired state (the applied sequence number included)."""
        canonical = json.dumps(
            {"seq": self.seq, "items": {kind: sorted(self.items[kind].items()) for kind in KINDS}},
            sort_keys=True,
            separators=(",", ":"),
            default=str,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_document(self) -> dict[str, Any]:
        """The desired state as a JSON document: a backup that `restore` batches bootstrap a cluster from."""
        return {
            "format": DOCUMENT_FORMAT,
            "seq": self.seq,
            "digest": self.digest(),
            "next_id": dict(self.next_id),
            "items": {kind: [self.items[kind][i] for i in sorted(self.items[kind])] for kind in KINDS},
        }

    def is_empty(self) -> bool:
        return not any(self.items[kind] for kind in KINDS)

    def checkpoint(self) -> tuple[Any, ...]:
        """What `roll_back` returns to: `apply` replaces these rather than changing them, so references suffice."""
        return (self.items, self.next_id, self.seq, self.leader)

    def roll_back(self, checkpoint: tuple[Any, ...]) -> None:
        self.items, self.next_id, self.seq, self.leader = checkpoint
        self._unique_index = None  # it followed the batch rolled back: rebuilt from these items on next use

    def unique_index(self) -> UniqueIndex:
        """Who holds each unique value, so a write checks uniqueness without scanning its kind."""
        if self._unique_index is None:
            index: UniqueIndex = {kind: {fields: {} for fields in UNIQUE[kind]} for kind in KINDS}
            for kind in KINDS:
                for item in self.items[kind].values():
                    _index_item(index[kind], item)
            self._unique_index = index
        return self._unique_index

    # ---- changing ----------------------------------------------------------------

    def apply(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Apply a batch of operations atomically; return the result the proposer gets.

        A batch whose idempotency key was seen returns the first result again and changes
        nothing, so a client that timed out can retry safely. A group entry applies each of its
        batches on its own (one refused batch does not refuse the others) and answers
        {"status": "group", "results": [one result per batch]}.
        """
        batch_format = batch.get("format", 1)  # entries from before formats were numbered are format 1
        if batch_format > LOG_FORMAT:
            # Applying what this release does not understand would make the replicas disagree.
            return {
                "status": "unsupported",
                "message": f"Log entry format {batch_format} is newer than this release reads ({LOG_FORMAT}): "
                "upgrade this replica.",
            }
        if "group" in batch:
            results: list[dict[str, Any]] = []
            for member in batch["group"]:
                # After a batch this release cannot read, nothing more applies here (the replica halts).
                stop = results and results[-1]["status"] == "unsupported"
                results.append(results[-1] if stop else self.apply(member))
            return {"status": "group", "results": results}
        while batch_format < LOG_FORMAT:
            batch = UPGRADES[batch_format](batch)
            batch_format += 1
        key = batch.get("key")
        if key and key in self.results:
            return {**self.results[key], "replayed": True}
        if "restore" in batch:
            result = self._restore(batch["restore"])
            if key:
                self.results[key] = result
            return result
        if "leader" in batch:
            # A new leader announces itself; only a different replica taking over is a change.
            if batch["leader"] == self.leader:
                return {"status": "unchanged"}
            self.leader = batch["leader"]
        try:
            staged = self._staged(batch["ops"])
        except Refused as refusal:
            result = {"status": refusal.status, "message": refusal.message}
        else:
            if self._unique_index is not None:
                staged.update_index(self._unique_index)
            self.items, self.next_id = staged.items, staged.next_id
            self.seq += 1
            result = {"status": "ok", "seq": self.seq, "changes": staged.changes, "created_ids": staged.created_ids}
        if key:
            self.results[key] = result
            while len(self.results) > IDEMPOTENCY_MEMORY:
                self.results.popitem(last=False)
        return result

    def _restore(self, document: dict[str, Any]) -> dict[str, Any]:
        """Bootstrap from a backup: only into a cluster that holds no desired state yet."""
        if document.get("format") != DOCUMENT_FORMAT:
            return {"status": "invalid", "message": f"Not an infermesh backup (format {document.get('format')!r})."}
        if not self.is_empty():
            return {
                "status": "conflict",
                "message": "This cluster already holds desired state; restore a backup into a fresh cluster.",
            }
        self.items = {kind: {item["id"]: item for item in document["items"].get(kind, [])} for kind in KINDS}
        self._unique_index = None
        self.next_id = {kind: int(document["next_id"].get(kind, 1)) for kind in KINDS}
        self.seq += 1
        changes = [{"op": "create", "kind": kind, "item": item} for kind in KINDS for item in self.items[kind].values()]
        return {"status": "ok", "seq": self.seq, "changes": changes, "created_ids": []}

    def _staged(self, ops: list[dict[str, Any]]) -> _Staging:
        staging = _Staging(self)
        for op in ops:
            staging.run(op)
        return staging


def _unique_values(item: dict[str, Any], fields: tuple[str, ...]) -> tuple[Any, ...] | None:
    """The item's values of unique fields, or None when one is unset (unset values never clash)."""
    values = tuple(item.get(field) for field in fields)
    return None if any(value is None for value in values) else values


def _hashable(values: tuple[Any, ...]) -> bool:
    try:
        hash(values)
    except TypeError:
        return False
    return True


def _index_item(kind_index: dict[tuple[str, ...], dict[tuple[Any, ...], set[int]]], item: dict[str, Any]) -> None:
    for fields, holders in kind_index.items():
        values = _unique_values(item, fields)
        if values is None:
            continue
        try:
            holders.setdefault(values, set()).add(item["id"])
        except TypeError:
            pass  # unhashable values equal no hashable ones: `_check_unique` compares them with every item


class _Staging:
    """A copy-on-write view of the state that a batch is applied to before it counts.

    A kind's items are copied when the batch first changes one of them, and only that kind:
    the state's own dictionaries are never changed, so whoever holds them (an export, a
    snapshot) reads a consistent state, and a write costs the same in a registry of any size.
    """

    def __init__(self, state: DesiredState) -> None:
        self.state = state
        self.items = dict(state.items)  # kind -> items: the state's own until `_writable` copies one
        self._copied: set[str] = set()
        self.touched: dict[str, set[int]] = {}  # kind -> ids this batch created, changed or deleted
        self.next_id = dict(state.next_id)
        self.changes: list[dict[str, Any]] = []
        self.created_ids: list[int | None] = []  # per operation, for {"$ref": index} values

    def _writable(self, kind: str, item_id: int) -> dict[int, dict[str, Any]]:
        if kind not in self._copied:
            self.items[kind] = dict(self.items[kind])
            self._copied.add(kind)
        self.touched.setdefault(kind, set()).add(item_id)
        return self.items[kind]

    def update_index(self, index: UniqueIndex) -> None:
        """Bring the state's unique index from the state's items to this batch's."""
        for kind, ids in self.touched.items():
            kind_index = index[kind]
            for item_id in ids:
                before = self.state.items[kind].get(item_id)
                for fields, holders in kind_index.items():
                    values = _unique_values(before, fields) if before is not None else None
                    if values is not None and _hashable(values) and values in holders:
                        holders[values].discard(item_id)
                        if not holders[values]:
                            del holders[values]
        for kind, ids in self.touched.items():
            for item_id in ids:
                after = self.items[kind].get(item_id)
                if after is not None:
                    _index_item(index[kind], after)

    def run(self, op: dict[str, Any]) -> None:
        kind = op["kind"]
        if kind not in KINDS:
            raise Refused("invalid", f"Unknown kind {kind!r}.")
        handler = {"create": self._create, "update": self._update, "delete": self._delete}.get(op["op"])
        if handler is None:
            raise Refused("invalid", f"Unknown operation {op['op']!r}.")
        if "data" in op:
            op = {**op, "data": {field: self._resolve(value) for field, value in op["data"].items()}}
        self.created_ids.append(None)
        handler(kind, op)

    def _resolve(self, value: Any) -> Any:
        """`{"$ref": i}` stands for the id created by operation i of the same batch."""
        if isinstance(value, dict) and set(value) == {"$ref"}:
            index = value["$ref"]
            if not isinstance(index, int) or not 0 <= index < len(self.created_ids) or self.created_ids[index] is None:
                raise Refused("invalid", f"$ref {index!r} does not name an earlier create in this batch.")
            return self.created_ids[index]
        return value

    def _create(self, kind: str, op: dict[str, Any]) -> None:
        item_id = self.next_id[kind]
        self.next_id[kind] = item_id + 1
        item = {**op["data"], "id": item_id, "version": 1}
        self._check_references(kind, item)
        self._check_unique(kind, item)
        self._writable(kind, item_id)[item_id] = item
        self.created_ids[-1] = item_id
        self.changes.append({"op": "create", "kind": kind, "item": item})

    def _existing(self, kind: str, op: dict[str, Any]) -> dict[str, Any]:
        item = self.items[kind].get(op["id"])
        if item is None:
            raise Refused("not_found", f"No {kind.replace('_', ' ')} with id {op['id']}.")
        expected = op.get("expected_version")
        if expected is not None and expected != item["version"]:
            raise Refused(
                "conflict",
                f"It changed since you read it (you sent version {expected}, it is now {item['version']}); "
                "read it again and reapply your change.",
            )
        return item

    def _update(self, kind: str, op: dict[str, Any]) -> None:
        current = self._existing(kind, op)
        changes = {field: value for field, value in op["data"].items() if current.get(field) != value}
        if not changes:
            self.changes.append({"op": "unchanged", "kind": kind, "item": current})
            return
        item = {**current, **changes, "version": current["version"] + 1}
        self._check_references(kind, item)
        self._check_unique(kind, item)
        self._writable(kind, item["id"])[item["id"]] = item
        self.changes.append({"op": "update", "kind": kind, "item": item, "changed": sorted(changes)})

    def _delete(self, kind: str, op: dict[str, Any]) -> None:
        item = self._existing(kind, op)
        self._remove(kind, item)

    def _remove(self, kind: str, item: dict[str, Any]) -> None:
        del self._writable(kind, item["id"])[item["id"]]
        self.changes.append({"op": "delete", "kind": kind, "item": item})
        for referrer_kind, fields in REFERENCES.items():
            for field, (target_kind, on_delete) in fields.items():
                if target_kind != kind:
                    continue
                for referrer in [i for i in self.items[referrer_kind].values() if i.get(field) == item["id"]]:
                    if on_delete == "cascade":
                        self._remove(referrer_kind, referrer)
                    else:
                        cleared = {**referrer, field: None}
                        self._writable(referrer_kind, referrer["id"])[referrer["id"]] = cleared
                        self.changes.append(
                            {"op": "update", "kind": referrer_kind, "item": cleared, "changed": [field]}
                        )
        if kind == "group":  # memberships are a list on each user
            for user in [u for u in self.items["user"].values() if item["id"] in u.get("group_ids", [])]:
                updated = {**user, "group_ids": [g for g in user["group_ids"] if g != item["id"]]}
                self._writable("user", user["id"])[user["id"]] = updated
                self.changes.append({"op": "update", "kind": "user", "item": updated, "changed": ["group_ids"]})

    def _check_references(self, kind: str, item: dict[str, Any]) -> None:
        for field, (target_kind, _) in REFERENCES.get(kind, {}).items():
            target = item.get(field)
            if target is not None and target not in self.items[target_kind]:
                raise Refused("not_found", f"No {target_kind.replace('_', ' ')} with id {target} (field {field}).")
        if kind == "user":
            missing = [g for g in item.get("group_ids", []) if g not in self.items["group"]]
            if missing:
                raise Refused("not_found", f"No group with id {missing[0]} (field group_ids).")

    def _check_unique(self, kind: str, item: dict[str, Any]) -> None:
        # Who else could hold these values: their holder in the state's index, or an item this batch touched.
        kind_index = self.state.unique_index()[kind]
        touched = self.touched.get(kind, set())
        for fields in UNIQUE[kind]:
            values = _unique_values(item, fields)
            if values is None:
                continue
            try:
                holders = kind_index[fields].get(values, set())
            except TypeError:
                # A list or a dict where a name belongs: not indexed, so compare with every item, as before the index.
                holders = set(self.items[kind])
            for other_id in touched | holders:
                other = self.items[kind].get(other_id)
                if other_id != item["id"] and other is not None and _unique_values(other, fields) == values:
                    described = ", ".join(f"{field}={value!r}" for field, value in zip(fields, values, strict=True))
                    raise Refused("conflict", f"A {kind.replace('_', ' ')} with {described} already exists.")
