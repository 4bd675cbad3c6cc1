"""The projection's own SQL (`meshcore.replication.rows`) writes rows the ORM reads back unchanged.

Runs on SQLite, and on PostgreSQL when DATABASE_URL names one.
"""

from datetime import UTC, datetime

import pytest

from meshcore import registry
from meshcore.models import Event, EventType, Node, Policy, ProjectionState
from meshcore.replication import rows
from meshcore.replication.log import local_log
from meshcore.writeguard import DirectWriteError, projecting

SPEC = {"scope": "global", "max_concurrent": 2, "nested": {"list": [1, "two", None], "flag": True}}
WHEN = datetime(2026, 11, 27, 5, 6, 7, 123456, tzinfo=UTC)


@pytest.fixture
def policy(operator):
    return registry.create_policy(
        actor=operator, name="fair-share", kind="quota", spec={"scope": "global", "max_concurrent": 1}
    )


def test_an_inserted_row_reads_back_as_written(db, operator):
    row = Policy(
        pk=4242,
        name="inserted",
        kind="quota",
        spec=SPEC,
        enabled=False,
        priority=7,
        description="written by rows.insert",
        owner_id=operator.pk,
        version=3,
        created_at=WHEN,
        updated_at=WHEN,
    )
    with projecting():
        rows.insert(row)
    stored = Policy.objects.get(pk=4242)
    assert (stored.name, stored.spec, stored.enabled, stored.priority, stored.owner, stored.version) == (
        "inserted",
        SPEC,
        False,
        7,
        operator,
        3,
    )
    assert stored.created_at == WHEN == stored.updated_at


def test_an_update_changes_only_the_named_columns(policy):
    with projecting():
        changed = rows.update(Policy, policy.pk, {"spec": SPEC, "version": 9, "updated_at": WHEN})
    assert changed == 1
    stored = Policy.objects.get(pk=policy.pk)
    assert (stored.spec, stored.version, stored.updated_at) == (SPEC, 9, WHEN)
    assert (stored.name, stored.kind, stored.priority, stored.created_at) == (
        policy.name,
        policy.kind,
        policy.priority,
        policy.created_at,
    )
    with projecting():
        assert rows.update(Policy, policy.pk + 1000, {"version": 10}) == 0


def test_an_event_gets_the_id_the_database_assigns(db):
    first, second = (Event(type=EventType.POLICY_UPDATED, actor="rows", data={"n": n}) for n in (1, 2))
    rows.insert(first)
    rows.insert(second)
    assert first.pk is not None and second.pk == first.pk + 1
    assert list(Event.objects.filter(pk__in=[first.pk, second.pk]).order_by("pk").values_list("data", flat=True)) == [
        {"n": 1},
        {"n": 2},
    ]
    assert Event.objects.get(pk=first.pk).created_at == first.created_at


def test_a_conditional_update_claims_only_a_higher_sequence_number(db):
    ProjectionState.objects.create(pk=1, applied_seq=5)

    def claim(seq):
        return rows.update_where(ProjectionState, {"applied_seq": seq}, {"id": 1}, below={"applied_seq": seq})

    assert claim(5) == 0
    assert claim(4) == 0
    assert ProjectionState.objects.get(pk=1).applied_seq == 5
    assert claim(6) == 1
    assert ProjectionState.objects.get(pk=1).applied_seq == 6


def test_replicated_tables_take_these_statements_only_from_the_projection(policy):
    with pytest.raises(DirectWriteError, match=r"meshcore\.registry"):
        rows.update(Policy, policy.pk, {"enabled": False})
    with pytest.raises(DirectWriteError):
        rows.insert(Node(pk=99, name="sneaky", address="x"))
    assert Policy.objects.get(pk=policy.pk).enabled is True
    assert not Node.objects.filter(name="sneaky").exists()


def _policy_update(key, policy_id, data):
    update = {"op": "update", "kind": "policy", "id": policy_id, "data": data}
    return {"key": key, "actor": "test", "ops": [update], "events": []}


def _propose_refused_by_the_database(log, batch, monkeypatch):
    def refuse(batch, result):
        raise RuntimeError("the database refused the write")

    with monkeypatch.context() as patch:
        patch.setattr(log.projection, "apply_committed", refuse)
        with pytest.raises(RuntimeError, match="refused"):
            log.propose(batch)


def test_a_batch_the_database_refuses_leaves_the_state_as_it_was(policy, monkeypatch):
    log = local_log()
    before = (log.state.seq, log.state.digest())
    batch = _policy_update("refused-once", policy.pk, {"priority": 99})
    _propose_refused_by_the_database(log, batch, monkeypatch)
    assert (log.state.seq, log.state.digest()) == before
    assert Policy.objects.get(pk=policy.pk).priority == policy.priority

    # The same key applies afresh: the refusal was not remembered as its result.
    result = log.propose(batch)
    assert result["status"] == "ok" and not result.get("replayed")
    assert Policy.objects.get(pk=policy.pk).priority == 99


def test_a_name_the_database_refused_stays_free(policy, monkeypatch):
    log = local_log()
    _propose_refused_by_the_database(log, _policy_update("rename-refused", policy.pk, {"name": "renamed"}), monkeypatch)
    # The uniqueness check must not remember the rolled-back name as taken, nor forget the old one.
    quota = {"scope": "global", "max_concurrent": 1}
    other = registry.create_policy(actor="test", name="renamed", kind="quota", spec=quota)
    assert other.name == "renamed"
    with pytest.raises(registry.Conflict):
        registry.create_policy(actor="test", name="fair-share", kind="quota", spec=quota)


def test_an_update_with_no_columns_changes_nothing(policy):
    with projecting():
        assert rows.update(Policy, policy.pk, {}) == 0
    assert Policy.objects.get(pk=policy.pk).version == policy.version


def _fields_of(instance):
    return {field.attname: getattr(instance, field.attname) for field in type(instance)._meta.concrete_fields}


def test_a_row_read_by_select_one_is_the_row_the_orm_reads(db, operator):
    node, _ = registry.create_node(actor=operator, name="gpu-7", address="10.0.0.7", labels={"rack": "b2"})
    model = registry.create_model(actor=operator, name="resnet", platform="onnxruntime_onnx", config={"max_batch": 8})
    runtime = registry.create_runtime(actor=operator, node_name="gpu-7", http_url="http://10.0.0.7:8000")
    policy = registry.create_policy(
        actor=operator, name="weighted", kind="quota", spec={"scope": "global", "max_concurrent": 3}
    )
    token, _ = registry.issue_api_token(
        actor=operator, user=operator, name="automation", expires_at=WHEN.replace(year=2099)
    )

    for instance, lookup in [
        (node, {"name": "gpu-7"}),
        (model, {"pk": model.pk}),
        (runtime, {"pk": runtime.pk}),
        (policy, {"name": "weighted"}),
        (token, {"pk": token.pk}),
        (operator, {"username": operator.username}),
    ]:
        through_orm = type(instance).objects.get(**lookup)
        read = rows.select_one(type(instance), **lookup)
        assert _fields_of(read) == _fields_of(through_orm), type(instance).__name__
        assert (read._state.adding, read._state.db) == (False, "default")
    assert rows.select_one(Policy, name="weighted").spec["max_concurrent"] == 3  # JSON decoded, as the ORM does
    assert rows.select_one(Node, name="gpu-7").labels == {"rack": "b2"}


def test_select_one_answers_none_for_no_row(db):
    assert rows.select_one(Policy, name="absent") is None
    assert rows.select_one(Node, pk=987654) is None
