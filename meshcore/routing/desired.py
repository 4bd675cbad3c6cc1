"""The desired state the router needs, as plain frozen data read from this replica's database.

Read when desired state changes (the projection hook) and as a periodic safety net, never on
a request: a proxied request reads only process memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from meshcore.models import ApiToken, Model, Node, Policy, PolicyKind, Runtime


@dataclass(frozen=True)
class NodeInfo:
    name: str
    draining: bool
    zone: str
    labels: dict[str, str]


@dataclass(frozen=True)
class RuntimeInfo:
    id: int
    node: str
    name: str
    http_url: str

    @property
    def key(self) -> str:
        """How the router names a target: `node/runtime`."""
        return f"{self.node}/{self.name}"


@dataclass(frozen=True)
class PolicyInfo:
    """A policy as `meshcore.policies` reads it (same attribute names as the model)."""

    name: str
    kind: str
    spec: dict[str, Any]
    enabled: bool
    priority: int


@dataclass(frozen=True)
class TokenInfo:
    """An API token as the proxy checks it; the tenant is the token's group."""

    name: str
    username: str
    user_active: bool
    is_staff: bool
    groups: frozenset[str]
    tenant: str | None
    expires_at: datetime | None
    revoked: bool


@dataclass(frozen=True)
class DesiredSnapshot:
    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    runtimes: tuple[RuntimeInfo, ...] = ()
    catalog: frozenset[str] = frozenset()
    policies: tuple[PolicyInfo, ...] = ()
    tokens: dict[str, TokenInfo] = field(default_factory=dict)  # by SHA-256 digest

    def policies_of(self, kind: str) -> list[PolicyInfo]:
        return [policy for policy in self.policies if policy.kind == kind]


def read_desired() -> DesiredSnapshot:
    """This replica's desired state, in five queries whatever the registry's size."""
    nodes = {
        name: NodeInfo(name, draining, zone, labels or {})
        for name, draining, zone, labels in Node.objects.values_list("name", "draining", "zone", "labels")
    }
    runtimes = tuple(
        RuntimeInfo(pk, node, name, url.rstrip("/"))
        for pk, node, name, url in Runtime.objects.values_list("pk", "node__name", "name", "http_url").order_by("pk")
    )
    catalog = frozenset(Model.objects.values_list("name", flat=True))
    policies = tuple(
        PolicyInfo(name, kind, spec, enabled, priority)
        for name, kind, spec, enabled, priority in Policy.objects.filter(enabled=True)
        .values_list("name", "kind", "spec", "enabled", "priority")
        .order_by("name")
    )
    tokens = {}
    for token in ApiToken.objects.select_related("user", "tenant").prefetch_related("user__groups"):
        tokens[token.digest] = TokenInfo(
            name=token.name,
            username=token.user.get_username(),
            user_active=token.user.is_active,
            is_staff=token.user.is_staff,
            groups=frozenset(group.name for group in token.user.groups.all()),
            tenant=token.tenant.name if token.tenant_id else None,
            expires_at=token.expires_at,
            revoked=token.revoked_at is not None,
        )
    return DesiredSnapshot(nodes, runtimes, catalog, policies, tokens)


__all__ = ["DesiredSnapshot", "NodeInfo", "PolicyInfo", "PolicyKind", "RuntimeInfo", "TokenInfo", "read_desired"]
