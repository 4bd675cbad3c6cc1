"""The one table of replicated kinds: what each kind replicates, keeps unique and refers to.

The log's state machine (`replication.desired`), the projection (`replication.projection`)
and the registry read it from here; `tests/replication/test_kinds_table.py` holds it against
the Django models, so a kind added to one and not the other fails a test. A leaf module: it
names models by label and imports nothing of the project.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Kind:
    name: str
    model: str  # the Django model, "app_label.ModelName"
    # The replicated columns (a foreign key as `<field>_id`); the model's other columns are observed.
    fields: tuple[str, ...]
    # Values unique among the items of the kind (a tuple is unique together).
    unique: tuple[tuple[str, ...], ...] = ()
    # field -> (referenced kind, "cascade" to delete the referrer with its target, or "clear" the field).
    references: dict[str, tuple[str, str]] = field(default_factory=dict)
    # What an update through the registry may change (the others are set at creation or by the registry).
    editable: tuple[str, ...] = ()


_STAMPS = ("version", "created_at", "updated_at")

# In dependency order: a kind comes after the kinds it refers to.
KIND_TABLE: tuple[Kind, ...] = (
    Kind("group", "auth.Group", ("name",), unique=(("name",),)),
    Kind(
        "user",
        "meshcore.User",
        (
            "username",
            "password",
            "email",
            "first_name",
            "last_name",
            "is_active",
            "is_staff",
            "is_superuser",
            "date_joined",
        ),
        unique=(("username",),),
    ),
    Kind(
        "node",
        "meshcore.Node",
        ("name", "address", "roles", "zone", "labels", "draining", *_STAMPS),
        unique=(("name",),),
        editable=("address", "roles", "zone", "labels"),
    ),
    Kind(
        "node_token",
        "meshcore.NodeToken",
        ("node_id", "digest", "prefix", "issued_at", "revoked_at"),
        unique=(("node_id",), ("digest",)),
        references={"node_id": ("node", "cascade")},
    ),
    Kind(
        "model",
        "meshcore.Model",
        ("name", "revision", "platform", "config", "description", *_STAMPS),
        unique=(("name", "revision"),),
        editable=("name", "revision", "platform", "config", "description"),
    ),
    Kind(
        "runtime",
        "meshcore.Runtime",
        ("node_id", "name", "http_url", "grpc_url", "metrics_url", *_STAMPS),
        unique=(("node_id", "name"),),
        references={"node_id": ("node", "cascade")},
        editable=("name", "http_url", "grpc_url", "metrics_url"),
    ),
    Kind(
        "policy",
        "meshcore.Policy",
        ("name", "kind", "spec", "enabled", "priority", "description", "owner_id", *_STAMPS),
        unique=(("name",),),
        references={"owner_id": ("user", "clear")},
        editable=("name", "kind", "spec", "enabled", "priority", "description"),
    ),
    Kind(
        "api_token",
        "meshcore.ApiToken",
        ("name", "user_id", "tenant_id", "digest", "prefix", "created_at", "expires_at", "revoked_at", "version"),
        unique=(("user_id", "name"), ("digest",)),
        references={"user_id": ("user", "cascade"), "tenant_id": ("group", "clear")},
    ),
)

KIND_BY_NAME: dict[str, Kind] = {kind.name: kind for kind in KIND_TABLE}
KINDS: tuple[str, ...] = tuple(KIND_BY_NAME)
DESIRED_FIELDS: dict[str, tuple[str, ...]] = {kind.name: kind.fields for kind in KIND_TABLE}
UNIQUE: dict[str, tuple[tuple[str, ...], ...]] = {kind.name: kind.unique for kind in KIND_TABLE}
REFERENCES: dict[str, dict[str, tuple[str, str]]] = {
    kind.name: kind.references for kind in KIND_TABLE if kind.references
}
