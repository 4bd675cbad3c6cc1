"""Helpers shared by the API and admin tests: making mesh objects through the registry and
reading back the events a request caused."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group
from django.db.models import Max

from meshcore import registry
from meshcore.models import Event, Gpu, Model, ModelInstance, Node, Policy, Runtime

API = "/api/v1"

VALID_SPECS: dict[str, dict[str, Any]] = {
    "pin": {"model": "resnet50", "nodes": ["gpu-a"]},
    "quota": {"scope": "tenant", "target": "team-a", "max_requests_per_second": 10},
    "acl": {"subjects": {"users": ["victor"]}, "models": ["*"], "actions": ["infer"], "effect": "allow"},
    "load_balancing": {"model": "resnet50", "strategy": "least_request"},
}


def make_node(name: str, **kwargs: Any) -> Node:
    kwargs.setdefault("address", f"{name}.mesh.internal")
    node, _token = registry.create_node(actor="setup", name=name, **kwargs)
    return node


def make_model(name: str, platform: str = "onnxruntime", **kwargs: Any) -> Model:
    return registry.create_model(actor="setup", name=name, platform=platform, **kwargs)


def make_runtime(node: Node, name: str = "triton", **kwargs: Any) -> Runtime:
    kwargs.setdefault("http_url", f"http://{node.address}:8000")
    return registry.create_runtime(actor="setup", node_name=node.name, name=name, **kwargs)


def make_policy(name: str, kind: str = "quota", spec: dict | None = None, **kwargs: Any) -> Policy:
    return registry.create_policy(actor="setup", name=name, kind=kind, spec=spec or VALID_SPECS[kind], **kwargs)


def make_group(name: str) -> Group:
    """A group (a tenant); groups are replicated, so they too are made through the registry."""
    return registry.save_group(actor="setup", group=Group(name=name))


def commit_ops(*ops: dict[str, Any]) -> None:
    """Commit raw operations through the registry's log, for states no registry call makes
    (a token whose expiry has passed) or undoes (a token deleted rather than revoked)."""
    registry.commit("setup", list(ops), [])


def make_gpu(node: Node, index: int = 0, **kwargs: Any) -> Gpu:
    kwargs.setdefault("name", "NVIDIA H100 80GB HBM3")
    return Gpu.objects.create(node=node, index=index, uuid=f"GPU-{node.name}-{index}", **kwargs)


def make_instance(runtime: Runtime, model_name: str, state: str = "ready", model: Model | None = None) -> ModelInstance:
    return ModelInstance.objects.create(runtime=runtime, model=model, model_name=model_name, state=state)


def last_event_id() -> int:
    return Event.objects.aggregate(last=Max("id"))["last"] or 0


def events_since(event_id: int) -> list[tuple[str, str]]:
    """(type, actor) of each event recorded after `event_id`, oldest first."""
    return list(Event.objects.filter(id__gt=event_id).order_by("id").values_list("type", "actor"))


def data_of(event: Event) -> dict[str, Any]:
    """An event's data without the log position (`seq`) every replicated change carries."""
    data = dict(event.data)
    seq = data.pop("seq")
    assert isinstance(seq, int) and seq > 0, event.data
    return data
