"""The replicated state machine: deterministic, atomic batches, versions, uniqueness, idempotency."""

import pickle
import random

import pytest

from meshcore.replication.desired import DesiredState


def create(kind, key=None, **data):
    return {"op": "create", "kind": kind, "data": data}


def update(kind, item_id, data, expected_version=None):
    return {"op": "update", "kind": kind, "id": item_id, "data": data, "expected_version": expected_version}


def batch(*ops, key=None):
    return {"key": key, "ops": list(ops)}


def test_it_assigns_ids_and_versions_and_counts_applied_batches():
    state = DesiredState()
    result = state.apply(batch(create("node", name="gpu-a"), create("node", name="gpu-b")))
    assert result["status"] == "ok"
    assert result["seq"] == 1
    assert [c["item"]["id"] for c in result["changes"]] == [1, 2]
    assert state.get("node", 2) == {"name": "gpu-b", "id": 2, "version": 1}


def test_it_applies_a_batch_all_or_nothing():
    state = DesiredState()
    state.apply(batch(create("node", name="gpu-a")))
    result = state.apply(batch(create("node", name="gpu-b"), create("node", name="gpu-a")))
    assert result["status"] == "conflict"
    assert "name='gpu-a'" in result["message"]
    assert state.find("node", name="gpu-b") is None
    assert state.seq == 1
    assert state.next_id["node"] == 2  # a refused batch does not consume ids either


def test_it_refuses_a_stale_version_and_bumps_on_change():
    state = DesiredState()
    state.apply(batch(create("policy", name="p", spec={"a": 1})))
    ok = state.apply(
        batch({"op": "update", "kind": "policy", "id": 1, "data": {"spec": {"a": 2}}, "expected_version": 1})
    )
    assert ok["changes"][0]["item"]["version"] == 2
    stale = state.apply(
        batch({"op": "update", "kind": "policy", "id": 1, "data": {"spec": {"a": 3}}, "expected_version": 1})
    )
    assert stale["status"] == "conflict"
    assert "version 1, it is now 2" in stale["message"]
    assert state.get("policy", 1)["spec"] == {"a": 2}


def test_it_returns_the_first_result_for_a_repeated_idempotency_key():
    state = DesiredState()
    first = state.apply(batch(create("node", name="gpu-a"), key="k1"))
    again = state.apply(batch(create("node", name="gpu-a"), key="k1"))
    assert again["status"] == "ok" and again["replayed"]
    assert again["seq"] == first["seq"] == state.seq == 1
    assert len(state.items["node"]) == 1


def test_it_cascades_and_clears_references_on_delete():
    state = DesiredState()
    state.apply(batch(create("group", name="team"), create("user", username="u", group_ids=[1])))
    state.apply(batch(create("node", name="n"), create("runtime", node_id=1, name="triton")))
    state.apply(batch(create("api_token", user_id=1, tenant_id=1, name="t", digest="d")))
    state.apply(batch({"op": "delete", "kind": "group", "id": 1}))
    assert state.get("api_token", 1)["tenant_id"] is None
    assert state.get("user", 1)["group_ids"] == []
    result = state.apply(batch({"op": "delete", "kind": "node", "id": 1}))
    assert [(c["op"], c["kind"]) for c in result["changes"]] == [("delete", "node"), ("delete", "runtime")]


def test_it_refuses_references_to_missing_items():
    state = DesiredState()
    result = state.apply(batch(create("runtime", node_id=9, name="triton")))
    assert result["status"] == "not_found"
    assert "node_id" in result["message"]


def test_equal_histories_give_equal_digests():
    ops = [batch(create("node", name=f"gpu-{i}")) for i in range(5)]
    one, two = DesiredState(), DesiredState()
    for entry in ops:
        one.apply(entry)
        two.apply(entry)
    assert one.digest() == two.digest()
    two.apply(batch({"op": "update", "kind": "node", "id": 1, "data": {"zone": "b"}}))
    assert one.digest() != two.digest()


def test_it_lets_an_operation_refer_to_an_item_created_earlier_in_the_batch():
    state = DesiredState()
    result = state.apply(batch(create("node", name="gpu-a"), create("node_token", node_id={"$ref": 0}, digest="d")))
    assert result["status"] == "ok"
    assert state.get("node_token", 1)["node_id"] == 1
    bad = state.apply(batch(create("node_token", node_id={"$ref": 5}, digest="e")))
    assert bad["status"] == "invalid"


def test_it_reads_entries_written_before_formats_were_numbered():
    state = DesiredState()
    assert state.apply({"key": "old", "ops": [create("node", name="gpu-a")]})["status"] == "ok"


def test_it_refuses_entries_newer_than_it_reads_and_changes_nothing():
    state = DesiredState()
    result = state.apply({"format": 99, "key": "new", "ops": [create("node", name="gpu-a")]})
    assert result["status"] == "unsupported"
    assert "upgrade this replica" in result["message"]
    assert state.seq == 0 and state.is_empty()


def test_it_upgrades_older_entries_before_applying_them(monkeypatch):
    from meshcore.replication import desired as state_module

    current = state_module.LOG_FORMAT

    def rename_hosts(batch):  # a made-up change to the next format: "host" became "node"
        ops = [{**op, "kind": "node" if op["kind"] == "host" else op["kind"]} for op in batch["ops"]]
        return {**batch, "ops": ops, "format": current + 1}

    monkeypatch.setattr(state_module, "LOG_FORMAT", current + 1)
    monkeypatch.setitem(state_module.UPGRADES, current, rename_hosts)
    state = DesiredState()
    result = state.apply({"format": 1, "key": "k", "ops": [create("host", name="gpu-a")]})
    assert result["status"] == "ok"
    assert state.find("node", name="gpu-a") is not None


def test_a_group_entry_applies_each_batch_on_its_own():
    state = DesiredState()
    first = batch(create("node", name="gpu-a"), key="a")
    duplicate = batch(create("node", name="gpu-a"), key="dup")
    second = batch(create("node", name="gpu-b"), key="b")
    result = state.apply({"format": 2, "group": [first, duplicate, second, first]})
    assert result["status"] == "group"
    statuses = [member["status"] for member in result["results"]]
    assert statuses == ["ok", "conflict", "ok", "ok"]
    assert [member.get("seq") for member in result["results"]] == [1, None, 2, 1]
    assert result["results"][3]["replayed"] is True
    assert state.seq == 2 and state.find("node", name="gpu-b") is not None


def test_a_group_entry_gives_each_batch_the_result_it_would_get_alone():
    batches = [batch(create("node", name=f"gpu-{n}"), key=str(n)) for n in range(5)]
    alone, grouped = DesiredState(), DesiredState()
    one_by_one = [alone.apply(member) for member in batches]
    assert grouped.apply({"format": 2, "group": batches})["results"] == one_by_one
    assert grouped.digest() == alone.digest()


def test_nothing_in_a_group_applies_after_a_batch_too_new_for_this_release():
    state = DesiredState()
    newer = {"format": 99, "key": "new", "ops": [create("node", name="gpu-x")]}
    result = state.apply({"format": 2, "group": [batch(create("node", name="gpu-a")), newer, batch(create("node"))]})
    assert [member["status"] for member in result["results"]] == ["ok", "unsupported", "unsupported"]
    assert state.seq == 1


def test_format_1_entries_apply_as_they_did_before_group_entries_existed():
    old, new = DesiredState(), DesiredState()
    entry = {"format": 1, "key": "k", "ops": [create("node", name="gpu-a")]}
    assert old.apply(entry) == new.apply({**entry, "format": 2})
    assert old.digest() == new.digest()


def _snapshot(state):
    return {kind: list(items.items()) for kind, items in state.items.items()}, dict(state.next_id), state.seq


def test_a_write_changes_the_items_in_place_and_a_refused_one_leaves_them_as_they_were():
    state = DesiredState()
    state.apply(batch(create("node", name="a"), create("node", name="b"), create("runtime", node_id=1, name="t")))
    nodes = state.items["node"]
    state.apply(batch(update("node", 2, {"zone": "z"})))
    assert state.items["node"] is nodes and nodes[2]["zone"] == "z"  # no copy of the kind per write
    before = _snapshot(state)
    refused = state.apply(
        batch(
            {"op": "delete", "kind": "node", "id": 1},  # cascades to the runtime
            update("node", 2, {"name": "c"}),
            create("node", name="c"),  # clashes with the rename above: the whole batch is refused
        )
    )
    assert refused["status"] == "conflict"
    assert _snapshot(state) == before  # every item back, in the same order
    assert state.apply(batch(create("node", name="a")))["status"] == "conflict"  # the index is as it was too
    assert state.apply(batch(create("node", name="c")))["status"] == "ok"


def test_a_batch_that_fails_halfway_is_undone_before_the_error_leaves():
    state = DesiredState()
    state.apply(batch(create("node", name="a")))
    before = _snapshot(state)
    with pytest.raises(KeyError):
        state.apply(batch(update("node", 1, {"name": "b"}), {"op": "update", "kind": "node", "data": {}}))
    assert _snapshot(state) == before


def test_roll_back_returns_to_the_checkpoint_whatever_applied_since():
    state = DesiredState()
    state.apply(batch(create("node", name="a"), create("node", name="b"), create("runtime", node_id=1, name="t")))
    before, digest = _snapshot(state), state.digest()
    checkpoint = state.checkpoint()
    state.apply(batch(update("node", 2, {"name": "renamed"}), create("node", name="new")))
    state.apply(batch({"op": "delete", "kind": "node", "id": 1}))
    state.roll_back(checkpoint)
    assert _snapshot(state) == before and state.digest() == digest
    assert state.apply(batch(create("node", name="b")))["status"] == "conflict"
    assert state.apply(batch(create("node", name="renamed")))["status"] == "ok"

    empty = DesiredState()
    checkpoint = empty.checkpoint()
    document = state.to_document()
    assert empty.apply({"key": "r", "restore": document})["status"] == "ok"
    empty.roll_back(checkpoint)
    assert empty.is_empty() and empty.seq == 0

    # Batches, then a restore (the state had become empty), then more: all of it undone.
    before, digest = _snapshot(state), state.digest()
    checkpoint = state.checkpoint()
    state.apply(batch(update("node", 2, {"zone": "gone"})))
    state.apply(batch(*({"op": "delete", "kind": "node", "id": node_id} for node_id in list(state.items["node"]))))
    assert state.is_empty()
    assert state.apply({"key": "r2", "restore": document})["status"] == "ok"
    state.apply(batch(create("node", name="after-restore")))
    state.roll_back(checkpoint)
    assert _snapshot(state) == before and state.digest() == digest


def test_one_batch_of_thousands_of_creates_checks_each_name_against_the_others():
    state = DesiredState()
    state.apply(batch(create("policy", name="existing")))
    names = [f"p{index}" for index in range(3000)]
    clash = state.apply(batch(*(create("policy", name=name) for name in [*names, "p1500"])))
    assert clash["status"] == "conflict" and "p1500" in clash["message"]
    assert state.apply(batch(create("policy", name="existing")))["status"] == "conflict"
    assert len(state.items["policy"]) == 1  # the refused batch left nothing behind
    assert state.apply(batch(*(create("policy", name=name) for name in names)))["status"] == "ok"
    assert len(state.items["policy"]) == 3001


def test_uniqueness_holds_within_a_batch_and_across_renames_and_deletes():
    state = DesiredState()
    state.apply(batch(create("node", name="a"), create("node", name="b")))
    assert state.apply(batch(update("node", 1, {"name": "b"})))["status"] == "conflict"
    # Swapped in one batch: b leaves its name before a takes it.
    swapped = state.apply(batch(update("node", 2, {"name": "tmp"}), update("node", 1, {"name": "b"})))
    assert swapped["status"] == "ok"
    assert state.apply(batch(create("node", name="b")))["status"] == "conflict"
    assert state.apply(batch(create("node", name="x"), create("node", name="x")))["status"] == "conflict"
    assert state.apply(batch({"op": "delete", "kind": "node", "id": 1}, create("node", name="b")))["status"] == "ok"
    together = state.apply(batch(create("model", name="m", revision="1"), create("model", name="m", revision="2")))
    assert together["status"] == "ok"  # unique together: another revision is another model
    assert state.apply(batch(create("model", name="m", revision="1")))["status"] == "conflict"


def test_a_unique_field_given_a_list_is_compared_as_before_the_index():
    state = DesiredState()
    assert state.apply(batch(create("node", name=["gpu-a"])))["status"] == "ok"
    assert state.apply(batch(create("node", name=["gpu-a"])))["status"] == "conflict"
    assert state.apply(batch(create("node", name="gpu-a")))["status"] == "ok"
    assert state.apply(batch({"op": "delete", "kind": "node", "id": 1}))["status"] == "ok"
    assert state.apply(batch(create("node", name=["gpu-a"])))["status"] == "ok"


def test_the_unique_index_stays_equal_to_one_built_afresh_and_is_never_pickled():
    rng = random.Random(7)
    state = DesiredState()
    names = [f"n{i}" for i in range(6)]
    for _ in range(400):
        ids = list(state.items["node"])
        ops = []
        for _ in range(rng.randint(1, 3)):
            roll = rng.random()
            if roll < 0.4 or not ids:
                ops.append(create("node", name=rng.choice(names)))
            elif roll < 0.8:
                ops.append(update("node", rng.choice(ids), {"name": rng.choice(names)}))
            else:
                ops.append({"op": "delete", "kind": "node", "id": rng.choice(ids)})
        # A replica restored from a snapshot builds its index afresh: it must answer every batch alike.
        restored = pickle.loads(pickle.dumps(state))
        assert "_unique_index" not in restored.__dict__
        entry = batch(*ops)
        assert restored.apply(entry) == state.apply(entry)
        assert restored.digest() == state.digest() and _snapshot(restored) == _snapshot(state)
        held = [item["name"] for item in state.items["node"].values()]
        assert len(held) == len(set(held))
        fresh = pickle.loads(pickle.dumps(state))
        assert state.unique_index() == fresh.unique_index()


def test_a_snapshot_pickled_before_the_index_existed_still_loads_and_applies():
    state = DesiredState()
    state.apply(batch(create("node", name="gpu-a")))
    older = pickle.loads(pickle.dumps(state))
    older.__dict__.pop("_unique_index", None)  # as an earlier release pickled it: no such attribute
    assert older.apply(batch(create("node", name="gpu-a")))["status"] == "conflict"
    assert older.apply(batch(create("node", name="gpu-b")))["status"] == "ok"
