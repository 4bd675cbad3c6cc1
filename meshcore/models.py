"""The mesh's domain: desired state (nodes, models, runtimes, policies, tokens) and what
agents observe (GPUs, model instances, health), kept in separate fields and tables.

Desired-state rows change only through `meshcore.registry`; observed fields are written
by telemetry ingest and are read-only everywhere else.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractUser, Group, UserManager
from django.db import models
from django.utils import timezone

from meshcore.writeguard import UserWrites, is_projecting, require_projecting


class ReplicatedQuerySet(models.QuerySet):
    """Bulk writes to a replicated table fail unless they come from the apply path.

    Updates that touch only the model's observed fields (reported by agents, never replicated)
    are allowed anywhere.
    """

    def update(self, **kwargs: Any) -> int:
        if not set(kwargs) <= set(getattr(self.model, "OBSERVED_FIELDS", ())):
            require_projecting(self.model, "QuerySet.update()")
        return super().update(**kwargs)

    def delete(self) -> tuple[int, dict[str, int]]:
        require_projecting(self.model, "QuerySet.delete()")
        return super().delete()

    def bulk_create(self, *args: Any, **kwargs: Any) -> list:
        require_projecting(self.model, "bulk_create()")
        return super().bulk_create(*args, **kwargs)

    def bulk_update(self, objs: Any, fields: Any, *args: Any, **kwargs: Any) -> int:
        if not set(fields) <= set(getattr(self.model, "OBSERVED_FIELDS", ())):
            require_projecting(self.model, "bulk_update()")
        return super().bulk_update(objs, fields, *args, **kwargs)


class ReplicatedModel(models.Model):
    """A desired-state table: rows change only when the Raft log's committed entries are applied."""

    OBSERVED_FIELDS: tuple[str, ...] = ()

    objects = ReplicatedQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        update_fields = kwargs.get("update_fields")
        if update_fields is None or not set(update_fields) <= set(self.OBSERVED_FIELDS):
            require_projecting(self, "save()")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        require_projecting(self, "delete()")
        return super().delete(*args, **kwargs)


class ReplicatedUserManager(UserManager.from_queryset(ReplicatedQuerySet)):
    pass


class User(ReplicatedModel, AbstractUser):
    """The mesh's user: Django's own, as a model of this app so identity can be replicated."""

    # Login time is per replica (written on login); everything else comes from the log.
    OBSERVED_FIELDS = ("last_login",)

    objects = ReplicatedUserManager()

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"

    def __str__(self) -> str:
        return self.get_username()

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Django's own flows (createsuperuser, password changes, auth forms) save users directly:
        outside the apply path that save becomes a registry write, committed on a quorum."""
        update_fields = kwargs.get("update_fields")
        if is_projecting() or (update_fields is not None and set(update_fields) <= set(self.OBSERVED_FIELDS)):
            models.Model.save(self, *args, **kwargs)
            return
        UserWrites.saving(self)
        self._state.adding = False
        self._state.db = "default"

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        if is_projecting():
            return models.Model.delete(self, *args, **kwargs)
        UserWrites.deleting(self)
        return 1, {self._meta.label: 1}


class Health(models.TextChoices):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


class NodeRole(models.TextChoices):
    GPU = "gpu", "GPU host (runs an agent and Triton)"
    CONTROL = "control", "Control-plane replica"
    ROUTER = "router", "Router"


class Node(ReplicatedModel):
    OBSERVED_FIELDS = ("health", "last_seen", "agent_version")

    name = models.SlugField(max_length=63, unique=True)
    address = models.CharField(max_length=255, help_text="Host name or IP address the mesh reaches the node at.")
    roles = models.JSONField(default=list, blank=True, help_text="Any of: gpu, control, router.")
    zone = models.CharField(max_length=63, blank=True, db_index=True)
    labels = models.JSONField(default=dict, blank=True)
    # Desired: set by operators.
    draining = models.BooleanField(default=False, help_text="No new work is routed or placed here.")
    # Observed: set by the node's agent reports.
    health = models.CharField(max_length=16, choices=Health.choices, default=Health.UNKNOWN, db_index=True)
    last_seen = models.DateTimeField(null=True, blank=True)
    agent_version = models.CharField(max_length=64, blank=True)
    version = models.PositiveIntegerField(default=1, help_text="Increases with every desired-state change.")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class NodeToken(ReplicatedModel):
    """The secret a node's agent presents; only its SHA-256 is kept."""

    node = models.OneToOneField(Node, on_delete=models.CASCADE, related_name="token")
    digest = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=16, help_text="First characters of the token, to tell tokens apart.")
    issued_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.node.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class Gpu(models.Model):
    """Observed GPU inventory, mirrored from agent reports."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="gpus")
    uuid = models.CharField(max_length=96, unique=True)
    index = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=128)
    memory_total_bytes = models.BigIntegerField(default=0)
    mig_profile = models.CharField(max_length=64, blank=True)
    simulated = models.BooleanField(default=False)
    last_seen = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["node__name", "index"]
        verbose_name = "GPU"

    def __str__(self) -> str:
        return f"{self.node.name}/gpu{self.index} {self.name}"


class Model(ReplicatedModel):
    """A model in the catalog, as Triton names it, at one revision."""

    name = models.CharField(max_length=128)
    revision = models.CharField(max_length=64, default="1")
    platform = models.CharField(max_length=64, db_index=True, help_text="Triton backend or platform, e.g. onnxruntime.")
    config = models.JSONField(default=dict, blank=True)
    description = models.TextField(blank=True)
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "revision"]
        constraints = [models.UniqueConstraint(fields=["name", "revision"], name="model_name_revision_unique")]

    def __str__(self) -> str:
        return f"{self.name}:{self.revision}"


class Runtime(ReplicatedModel):
    """A Triton endpoint on a node."""

    OBSERVED_FIELDS = ("health", "last_seen")

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="runtimes")
    name = models.SlugField(max_length=63, default="triton")
    http_url = models.URLField(max_length=255)
    grpc_url = models.CharField(max_length=255, blank=True)
    metrics_url = models.URLField(max_length=255, blank=True)
    health = models.CharField(max_length=16, choices=Health.choices, default=Health.UNKNOWN)
    last_seen = models.DateTimeField(null=True, blank=True)
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["node__name", "name"]
        constraints = [models.UniqueConstraint(fields=["node", "name"], name="runtime_node_name_unique")]

    def __str__(self) -> str:
        return f"{self.node.name}/{self.name}"


class InstanceState(models.TextChoices):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    UNLOADING = "unloading"


class ModelInstance(models.Model):
    """A model on a runtime, as the runtime reports it (observed).

    The name is kept apart from the catalog link: Triton may serve a model the catalog lacks.
    """

    runtime = models.ForeignKey(Runtime, on_delete=models.CASCADE, related_name="instances")
    model = models.ForeignKey(Model, on_delete=models.SET_NULL, null=True, blank=True, related_name="instances")
    model_name = models.CharField(max_length=128)
    model_revision = models.CharField(max_length=64, blank=True)
    state = models.CharField(max_length=16, choices=InstanceState.choices, default=InstanceState.LOADING)
    reason = models.TextField(blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["model_name", "runtime_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["runtime", "model_name", "model_revision"], name="instance_runtime_model_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.model_name}@{self.runtime}"


class PolicyKind(models.TextChoices):
    PIN = "pin"
    QUOTA = "quota"
    ACL = "acl"
    LOAD_BALANCING = "load_balancing"


class Policy(ReplicatedModel):
    name = models.SlugField(max_length=100, unique=True)
    kind = models.CharField(max_length=32, choices=PolicyKind.choices, db_index=True)
    spec = models.JSONField(default=dict)
    enabled = models.BooleanField(default=True, db_index=True)
    priority = models.IntegerField(default=0, help_text="Higher wins among enabled policies that match.")
    description = models.TextField(blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="policies"
    )
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-priority", "name"]
        verbose_name_plural = "policies"

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"


class ApiToken(ReplicatedModel):
    """A bearer token for the API and the proxy; only its SHA-256 is kept."""

    name = models.CharField(max_length=100)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    tenant = models.ForeignKey(Group, on_delete=models.SET_NULL, null=True, blank=True, related_name="api_tokens")
    digest = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=16)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    version = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["user__username", "name"]
        verbose_name = "API token"
        constraints = [models.UniqueConstraint(fields=["user", "name"], name="api_token_user_name_unique")]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def is_usable(self, now: datetime | None = None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class EventType(models.TextChoices):
    NODE_JOINED = "NODE_JOINED"
    NODE_UPDATED = "NODE_UPDATED"
    NODE_LEFT = "NODE_LEFT"
    NODE_HEALTHY = "NODE_HEALTHY"
    NODE_UNHEALTHY = "NODE_UNHEALTHY"
    NODE_DRAINING = "NODE_DRAINING"
    NODE_UNDRAINED = "NODE_UNDRAINED"
    NODE_TOKEN_ROTATED = "NODE_TOKEN_ROTATED"
    NODE_TOKEN_REVOKED = "NODE_TOKEN_REVOKED"
    MODEL_CREATED = "MODEL_CREATED"
    MODEL_UPDATED = "MODEL_UPDATED"
    MODEL_DELETED = "MODEL_DELETED"
    MODEL_LOADED = "MODEL_LOADED"
    MODEL_UNLOADED = "MODEL_UNLOADED"
    MODEL_FAILED = "MODEL_FAILED"
    RUNTIME_CREATED = "RUNTIME_CREATED"
    RUNTIME_UPDATED = "RUNTIME_UPDATED"
    RUNTIME_DELETED = "RUNTIME_DELETED"
    RUNTIME_DISCOVERED = "RUNTIME_DISCOVERED"
    TARGET_EJECTED = "TARGET_EJECTED"
    TARGET_RESTORED = "TARGET_RESTORED"
    POLICY_CREATED = "POLICY_CREATED"
    POLICY_UPDATED = "POLICY_UPDATED"
    POLICY_DELETED = "POLICY_DELETED"
    TOKEN_ISSUED = "TOKEN_ISSUED"
    TOKEN_REVOKED = "TOKEN_REVOKED"
    USER_CREATED = "USER_CREATED"
    USER_UPDATED = "USER_UPDATED"
    USER_DELETED = "USER_DELETED"
    GROUP_CREATED = "GROUP_CREATED"
    GROUP_UPDATED = "GROUP_UPDATED"
    GROUP_DELETED = "GROUP_DELETED"
    LEADER_CHANGED = "LEADER_CHANGED"
    STATE_RESTORED = "STATE_RESTORED"


class ProjectionState(models.Model):
    """How far this replica's database has applied the log (one row; not replicated)."""

    applied_seq = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"applied up to {self.applied_seq}"


class Event(models.Model):
    type = models.CharField(max_length=32, choices=EventType.choices, db_index=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    node = models.ForeignKey(Node, on_delete=models.SET_NULL, null=True, blank=True, related_name="events")
    node_name = models.CharField(max_length=63, blank=True, help_text="Kept when the node is deleted.")
    actor = models.CharField(max_length=150, blank=True, help_text="Who made the change.")
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.type} {self.node_name or ''}".strip()
