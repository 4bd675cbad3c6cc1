"""API representations. Writable serializers validate the shape of input and hand the
change to `meshcore.registry`; they never save models themselves.

Every writable resource has a `version`: send the one you read (in the body or as
`If-Match`) and a change made meanwhile by someone else is refused with 409.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from meshcore import registry
from meshcore.labels import validate_labels
from meshcore.models import ApiToken, Event, Gpu, Model, ModelInstance, Node, NodeRole, Policy, PolicyKind, Runtime
from meshcore.policy_specs import SpecError, validate_spec

VERSION_HELP = "Version you read; a stale one is refused with 409. Omit to overwrite unconditionally."


def expected_version(serializer: serializers.Serializer, validated_data: dict[str, Any]) -> int | None:
    """The version the client says it read: the body's `version`, else an `If-Match` header."""
    version = validated_data.pop("version", None)
    if version is not None:
        return version
    request = serializer.context.get("request")
    if_match = request.headers.get("If-Match", "").strip().strip('"') if request else ""
    if not if_match or if_match == "*":
        return None
    if not if_match.isdigit():
        raise serializers.ValidationError({"If-Match": ['Send the resource\'s version, for example If-Match: "3".']})
    return int(if_match)


def _actor(serializer: serializers.Serializer) -> Any:
    request = serializer.context.get("request")
    return request.user if request else None


class NameRelatedField(serializers.SlugRelatedField):
    """A related row by its name; a name with a NUL byte, which PostgreSQL cannot even
    compare, is reported as not found instead of failing the query."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str) and "\x00" in data:
            self.fail("does_not_exist", slug_name=self.slug_field, value=data.replace("\x00", "\\x00"))
        return super().to_internal_value(data)


class LabelsField(serializers.DictField):
    child = serializers.CharField(allow_blank=True, max_length=63)

    def to_internal_value(self, data: Any) -> dict[str, str]:
        labels = super().to_internal_value(data)
        validate_labels(labels)
        return labels


class NodeSerializer(serializers.ModelSerializer):
    roles = serializers.ListField(child=serializers.ChoiceField(choices=NodeRole.choices), required=False)
    labels = LabelsField(required=False)
    version = serializers.IntegerField(required=False, min_value=1, help_text=VERSION_HELP)
    token_prefix = serializers.SerializerMethodField()
    live = serializers.SerializerMethodField(
        help_text="The agent's latest report: health, age in seconds, interval, GPU count; null before any report."
    )

    class Meta:
        model = Node
        fields = [
            "name",
            "address",
            "roles",
            "zone",
            "labels",
            "draining",
            "health",
            "last_seen",
            "agent_version",
            "token_prefix",
            "live",
            "version",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["draining", "health", "last_seen", "agent_version", "created_at", "updated_at"]
        extra_kwargs = {"name": {"validators": []}}

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_live(self, node: Node) -> dict[str, Any] | None:
        live, _ = _live(self, node.name)
        return live.summary() if live else None

    def get_token_prefix(self, node: Node) -> str | None:
        """First characters of the active agent token, to tell tokens apart (null when revoked)."""
        token = getattr(node, "token", None)
        return token.prefix if token is not None and token.is_active else None

    def create(self, validated_data: dict[str, Any]) -> Node:
        validated_data.pop("version", None)
        node, token = registry.create_node(actor=_actor(self), **validated_data)
        node.issued_token = token
        return node

    def update(self, node: Node, validated_data: dict[str, Any]) -> Node:
        version = expected_version(self, validated_data)
        return registry.update_node(
            actor=_actor(self), name=node.name, changes=validated_data, expected_version=version
        )


class NodeWithTokenSerializer(NodeSerializer):
    token = serializers.SerializerMethodField()

    class Meta(NodeSerializer.Meta):
        fields = [*NodeSerializer.Meta.fields, "token"]

    @extend_schema_field(OpenApiTypes.STR)
    def get_token(self, node: Node) -> str:
        """The node's agent token. Shown only in this response: store it now."""
        return node.issued_token


class ModelSerializer(serializers.ModelSerializer):
    platform = serializers.RegexField(
        r"^[a-z0-9][a-z0-9_.-]{0,63}$",
        error_messages={"invalid": "Use a Triton backend or platform name such as onnxruntime, python or tensorrt."},
    )
    config = serializers.DictField(required=False)
    version = serializers.IntegerField(required=False, min_value=1, help_text=VERSION_HELP)

    class Meta:
        model = Model
        fields = ["id", "name", "revision", "platform", "config", "description", "version", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]
        validators: list = []

    def create(self, validated_data: dict[str, Any]) -> Model:
        validated_data.pop("version", None)
        return registry.create_model(actor=_actor(self), **validated_data)

    def update(self, model: Model, validated_data: dict[str, Any]) -> Model:
        version = expected_version(self, validated_data)
        return registry.update_model(
            actor=_actor(self), model_id=model.pk, changes=validated_data, expected_version=version
        )


class RuntimeSerializer(serializers.ModelSerializer):
    node = NameRelatedField(slug_field="name", queryset=Node.objects.all())
    version = serializers.IntegerField(required=False, min_value=1, help_text=VERSION_HELP)

    class Meta:
        model = Runtime
        fields = [
            "id",
            "node",
            "name",
            "http_url",
            "grpc_url",
            "metrics_url",
            "health",
            "last_seen",
            "version",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["health", "last_seen", "created_at", "updated_at"]
        validators: list = []

    def create(self, validated_data: dict[str, Any]) -> Runtime:
        validated_data.pop("version", None)
        node = validated_data.pop("node")
        return registry.create_runtime(actor=_actor(self), node_name=node.name, **validated_data)

    def update(self, runtime: Runtime, validated_data: dict[str, Any]) -> Runtime:
        node = validated_data.pop("node", runtime.node)
        if node != runtime.node:
            raise serializers.ValidationError({"node": ["A runtime cannot move to another node; create a new one."]})
        version = expected_version(self, validated_data)
        return registry.update_runtime(
            actor=_actor(self), runtime_id=runtime.pk, changes=validated_data, expected_version=version
        )


class PolicySerializer(serializers.ModelSerializer):
    kind = serializers.ChoiceField(
        choices=PolicyKind.choices,
        error_messages={"invalid_choice": f"Unknown policy kind {{input!r}}. Allowed: {', '.join(PolicyKind.values)}."},
    )
    spec = serializers.JSONField(help_text="Fields depend on the kind; see docs/policies.md.")
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True)
    version = serializers.IntegerField(required=False, min_value=1, help_text=VERSION_HELP)

    class Meta:
        model = Policy
        fields = [
            "name",
            "kind",
            "spec",
            "enabled",
            "priority",
            "description",
            "owner",
            "version",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]
        extra_kwargs = {"name": {"validators": []}}

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "spec" in attrs or "kind" in attrs:
            kind = attrs.get("kind", getattr(self.instance, "kind", None))
            spec = attrs.get("spec", getattr(self.instance, "spec", None))
            try:
                attrs["spec"] = validate_spec(kind, spec)
            except SpecError as error:
                raise serializers.ValidationError(error.errors) from None
        return attrs

    def create(self, validated_data: dict[str, Any]) -> Policy:
        validated_data.pop("version", None)
        return registry.create_policy(actor=_actor(self), **validated_data)

    def update(self, policy: Policy, validated_data: dict[str, Any]) -> Policy:
        version = expected_version(self, validated_data)
        # The view read the policy (its owner with it) for this request: the registry need not read it again.
        return registry.update_policy(
            actor=_actor(self), name=policy.name, changes=validated_data, expected_version=version, current=policy
        )


class ApiTokenSerializer(serializers.ModelSerializer):
    user = NameRelatedField(
        slug_field="username",
        queryset=get_user_model().objects.filter(is_active=True),
        required=False,
        help_text="Owner of the token; defaults to you.",
    )
    tenant = NameRelatedField(
        slug_field="name", queryset=Group.objects.all(), required=False, allow_null=True, help_text="Group name."
    )
    active = serializers.SerializerMethodField()

    class Meta:
        model = ApiToken
        fields = ["id", "name", "user", "tenant", "prefix", "created_at", "expires_at", "revoked_at", "active"]
        read_only_fields = ["prefix", "created_at", "revoked_at"]
        validators: list = []

    def get_active(self, token: ApiToken) -> bool:
        return token.is_usable()

    def create(self, validated_data: dict[str, Any]) -> ApiToken:
        actor = _actor(self)
        user = validated_data.pop("user", None) or actor
        token, value = registry.issue_api_token(actor=actor, user=user, **validated_data)
        token.issued_token = value
        return token


class ApiTokenWithValueSerializer(ApiTokenSerializer):
    token = serializers.SerializerMethodField()

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "token"]

    @extend_schema_field(OpenApiTypes.STR)
    def get_token(self, token: ApiToken) -> str:
        """The bearer token. Shown only in this response: store it now."""
        return token.issued_token


class NodeTokenSerializer(serializers.Serializer):
    node = serializers.CharField()
    token = serializers.CharField(help_text="The node's new agent token. Shown only in this response.")
    prefix = serializers.CharField()


def _live(serializer: serializers.Serializer, node_name: str) -> Any:
    """This node's live record, read once per response by `LiveStateMixin` (None: no report)."""
    live, now = serializer.context.get("live", ({}, 0.0))
    return live.get(node_name), now


class GpuSerializer(serializers.ModelSerializer):
    node = serializers.SlugRelatedField(slug_field="name", read_only=True)
    live = serializers.SerializerMethodField(
        help_text="Latest metrics from the node's agent and their age in seconds; null before the first report."
    )

    class Meta:
        model = Gpu
        fields = [
            "id",
            "node",
            "uuid",
            "index",
            "name",
            "memory_total_bytes",
            "mig_profile",
            "simulated",
            "last_seen",
            "live",
        ]

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_live(self, gpu: Gpu) -> dict[str, Any] | None:
        node, now = _live(self, gpu.node.name)
        return node.gpu(gpu.uuid, now) if node else None


GPU_HISTORY_COLUMNS = ["time", "utilization_gpu_pct", "memory_used_bytes", "temperature_gpu_c", "power_usage_w"]


INSTANCE_HISTORY_COLUMNS = ["time", "queue_depth", "inference_per_s", "latency_ms"]


class HistorySerializer(serializers.Serializer):
    columns = serializers.ListField(child=serializers.CharField())
    points = serializers.ListField(child=serializers.ListField(child=serializers.FloatField(allow_null=True)))


class ModelInstanceSerializer(serializers.ModelSerializer):
    node = serializers.CharField(source="runtime.node.name", read_only=True)
    runtime = serializers.CharField(source="runtime.name", read_only=True)
    runtime_id = serializers.IntegerField(read_only=True)
    in_catalog = serializers.SerializerMethodField()
    live = serializers.SerializerMethodField()

    class Meta:
        model = ModelInstance
        fields = [
            "id",
            "model_name",
            "model_revision",
            "model",
            "in_catalog",
            "node",
            "runtime",
            "runtime_id",
            "state",
            "reason",
            "updated_at",
            "live",
        ]

    def get_in_catalog(self, instance: ModelInstance) -> bool:
        return instance.model_id is not None

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_live(self, instance: ModelInstance) -> dict[str, Any] | None:
        """Triton's latest state and statistics for this model (queue depth, rates, latency) and their age,
        and `router`: the routers' last-second aggregates for it (rate, errors, p50_ms, p99_ms)."""
        node, now = _live(self, instance.runtime.node.name)
        if node is None:
            return None
        live = node.instance(instance.runtime.name, instance.model_name, instance.model_revision, now)
        routed = self.context.get("router", {}).get((instance.model_name, f"{node.name}/{instance.runtime.name}"))
        if live is not None and routed is not None:
            live["router"] = {key: routed[key] for key in ("rate", "errors", "p50_ms", "p99_ms", "processes")}
        return live


class EventSerializer(serializers.ModelSerializer):
    node = serializers.CharField(source="node_name", read_only=True)

    class Meta:
        model = Event
        fields = ["id", "type", "created_at", "node", "actor", "data"]
