"""The model catalog: models by name and revision, and their configuration."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from django.utils import timezone

from meshcore.kinds import KIND_BY_NAME
from meshcore.models import EventType, Model
from meshcore.registry import committing
from meshcore.registry.committing import Actor, Change, InvalidChange

MODEL_FIELDS = KIND_BY_NAME["model"].editable
MAX_CONFIG_DEPTH = 32


def _json_problem(value: Any, max_depth: int) -> str | None:
    """Why `value` cannot be stored as JSON on every supported database, or None."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > max_depth:
            return f"Nests deeper than {max_depth} levels; flatten it."
        if isinstance(item, float) and not math.isfinite(item):
            return "Numbers must be finite; NaN and Infinity are not JSON."
        if isinstance(item, str) and "\x00" in item:
            return "Text cannot contain NUL (\\u0000) characters."
        if isinstance(item, dict):
            pending.extend((key, depth) for key in item)
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            pending.extend((child, depth + 1) for child in item)
    return None


def _validate_model_config(values: dict[str, Any]) -> None:
    if "config" not in values:
        return
    if not isinstance(values["config"], dict):
        raise InvalidChange({"config": "Must be a JSON object."})
    problem = _json_problem(values["config"], MAX_CONFIG_DEPTH)
    if problem:
        raise InvalidChange({"config": problem})


def _explain_model(model_id: int | None, expected_version: int | None, name: str, revision: str) -> None:
    if model_id is not None:
        model = committing.get_row(Model.objects, "model", pk=model_id)
        committing.check_version(model, expected_version, f"Model {model}")
    committing.refuse_duplicate(
        Model.objects.filter(name=name, revision=revision).exclude(pk=model_id),
        f"Model {name!r} revision {revision!r} is already in the catalog.",
    )


def create_model(
    *, actor: Actor, name: str, platform: str, revision: str = "1", config: dict | None = None, description: str = ""
) -> Model:
    _validate_model_config({"config": config if config is not None else {}})
    now = timezone.now()
    model = Model(
        name=name,
        revision=revision,
        platform=platform,
        config=config or {},
        description=description,
        created_at=now,
        updated_at=now,
    )
    committing.full_clean(model)
    result = committing.commit(
        actor,
        [{"op": "create", "kind": "model", "data": committing.item_data("model", model)}],
        [committing.event_spec(EventType.MODEL_CREATED, model=name, revision=revision, id={"$ref": 0})],
        explain=lambda: _explain_model(None, None, name, revision),
    )
    return Model.objects.get(pk=committing.created_id(result, "model"))


def update_model(*, actor: Actor, model_id: int, changes: dict[str, Any], expected_version: int | None = None) -> Model:
    _validate_model_config(changes)
    model = committing.get_row(Model.objects, "model", pk=model_id)
    changed = committing.assign_changes(model, changes, MODEL_FIELDS, "Model")
    if not changed:
        return model
    committing.full_clean(model)
    result = committing.commit(
        actor,
        [committing.update_op("model", model, changed, expected_version)],
        [
            committing.event_spec(
                EventType.MODEL_UPDATED, model=model.name, revision=model.revision, id=model.pk, changed=changed
            )
        ],
        explain=lambda: _explain_model(model_id, expected_version, model.name, model.revision),
    )
    return committing.as_committed(model, "model", result)


def _model_deletion(model_id: int, expected_version: int | None) -> Change:
    model = committing.get_row(Model.objects, "model", pk=model_id)
    return (
        [{"op": "delete", "kind": "model", "id": model.pk, "expected_version": expected_version}],
        [committing.event_spec(EventType.MODEL_DELETED, model=model.name, revision=model.revision)],
    )


def delete_model(*, actor: Actor, model_id: int, expected_version: int | None = None) -> None:
    def explain() -> None:
        model = committing.get_row(Model.objects, "model", pk=model_id)
        committing.check_version(model, expected_version, f"Model {model}")

    committing.commit(actor, *_model_deletion(model_id, expected_version), explain=explain)


def delete_models(*, actor: Actor, model_ids: Iterable[int]) -> None:
    """Delete several catalog models in one change: all of them, or (one refused) none."""
    committing.commit_all(actor, model_ids, lambda model_id: _model_deletion(model_id, None))
