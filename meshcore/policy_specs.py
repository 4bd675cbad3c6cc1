"""The spec of each policy kind: its fields, their validation, and its normal form.

`validate_spec(kind, spec)` returns the spec with defaults filled in, or raises
`SpecError` whose `errors` name every bad field (nested lists and dicts as DRF does),
so the API and the admin report the same precise messages.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from meshcore.labels import validate_label_key, validate_label_value

STRATEGIES = ("score_based", "least_request", "round_robin", "random", "consistent_hash")
SIGNALS = ("gpu_utilization", "gpu_memory", "queue_depth", "expected_wait", "network_latency", "recent_performance")
ACTIONS = ("infer", "read", "write")


class SpecError(Exception):
    def __init__(self, errors: dict[str, Any]) -> None:
        super().__init__(errors)
        self.errors = errors


class StrictSerializer(serializers.Serializer):
    """Rejects keys it does not know, so a typo is an error rather than silently ignored."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {key: [f"Unknown field. Allowed: {', '.join(sorted(self.fields))}."] for key in unknown}
                )
        return super().to_internal_value(data)


def _label_selector(value: dict) -> dict:
    if not isinstance(value, dict):
        raise serializers.ValidationError("Must be an object of label key to value.")
    for key, label_value in value.items():
        validate_label_key(key)
        validate_label_value(label_value)
    return value


class NameList(serializers.ListField):
    child = serializers.CharField(max_length=150)


class PinSpec(StrictSerializer):
    model = serializers.CharField(max_length=128)
    revision = serializers.CharField(max_length=64, required=False)
    nodes = NameList(required=False, allow_empty=False)
    selector = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False)
    min_replicas = serializers.IntegerField(min_value=0, max_value=1024, default=1)
    max_replicas = serializers.IntegerField(min_value=1, max_value=1024, required=False)

    def validate_selector(self, value: dict) -> dict:
        return _label_selector(value)

    def validate(self, attrs: dict) -> dict:
        if ("nodes" in attrs) == ("selector" in attrs):
            raise serializers.ValidationError(
                {"nodes": ["Give exactly one of nodes (a list of node names) or selector."]}
            )
        if "max_replicas" in attrs and attrs["max_replicas"] < attrs["min_replicas"]:
            raise serializers.ValidationError({"max_replicas": ["Must be at least min_replicas."]})
        return attrs


class QuotaSpec(StrictSerializer):
    scope = serializers.ChoiceField(choices=("global", "tenant", "model"))
    target = serializers.CharField(max_length=150, required=False)
    max_requests_per_second = serializers.FloatField(min_value=0.001, required=False)
    max_concurrent = serializers.IntegerField(min_value=1, required=False)
    enforcement = serializers.ChoiceField(choices=("block", "log"), default="block")

    def validate(self, attrs: dict) -> dict:
        if attrs["scope"] == "global" and "target" in attrs:
            raise serializers.ValidationError({"target": ["A global quota has no target; remove it."]})
        if attrs["scope"] != "global" and "target" not in attrs:
            raise serializers.ValidationError(
                {"target": [f"A {attrs['scope']} quota needs a target (the {attrs['scope']} name)."]}
            )
        if "max_requests_per_second" not in attrs and "max_concurrent" not in attrs:
            raise serializers.ValidationError(
                {"max_requests_per_second": ["Set max_requests_per_second, max_concurrent, or both."]}
            )
        return attrs


class AclSubjects(StrictSerializer):
    users = NameList(default=list)
    groups = NameList(default=list)
    tokens = NameList(default=list)

    def validate(self, attrs: dict) -> dict:
        if not any(attrs.values()):
            raise serializers.ValidationError({"users": ["Name at least one user, group or token."]})
        return attrs


class AclSpec(StrictSerializer):
    subjects = AclSubjects()
    models = NameList(allow_empty=False, help_text='Model names; "*" means every model.')
    actions = serializers.ListField(child=serializers.ChoiceField(choices=ACTIONS), allow_empty=False)
    effect = serializers.ChoiceField(choices=("allow", "deny"))


class LoadBalancingSpec(StrictSerializer):
    model = serializers.CharField(max_length=128, help_text='Model name; "*" applies to every model.')
    strategy = serializers.ChoiceField(choices=STRATEGIES, default="score_based")
    weights = serializers.DictField(child=serializers.FloatField(min_value=0, max_value=1000), default=dict)
    hash_header = serializers.RegexField(r"^[A-Za-z0-9-]{1,64}$", required=False)
    retries = serializers.IntegerField(min_value=0, max_value=10, default=1)
    timeout_ms = serializers.IntegerField(min_value=1, max_value=600_000, default=30_000)
    fallback_nodes = NameList(default=list)

    def validate_weights(self, value: dict) -> dict:
        unknown = sorted(set(value) - set(SIGNALS))
        if unknown:
            raise serializers.ValidationError(f"Unknown signal {', '.join(unknown)}. Allowed: {', '.join(SIGNALS)}.")
        return value

    def validate(self, attrs: dict) -> dict:
        if attrs["strategy"] == "consistent_hash" and "hash_header" not in attrs:
            raise serializers.ValidationError({"hash_header": ["consistent_hash needs the header to hash on."]})
        if attrs["strategy"] != "consistent_hash" and "hash_header" in attrs:
            raise serializers.ValidationError(
                {"hash_header": ["Only the consistent_hash strategy uses a hash header."]}
            )
        return attrs


SPEC_SERIALIZERS: dict[str, type[StrictSerializer]] = {
    "pin": PinSpec,
    "quota": QuotaSpec,
    "acl": AclSpec,
    "load_balancing": LoadBalancingSpec,
}


def validate_spec(kind: str, spec: Any) -> dict:
    """The spec in normal form (defaults filled in), or SpecError naming each bad field."""
    serializer_class = SPEC_SERIALIZERS.get(kind)
    if serializer_class is None:
        raise SpecError({"kind": [f"Unknown policy kind {kind!r}. Allowed: {', '.join(SPEC_SERIALIZERS)}."]})
    if not isinstance(spec, dict):
        raise SpecError({"spec": [f"Must be a JSON object, not {type(spec).__name__}."]})
    serializer = serializer_class(data=spec)
    if not serializer.is_valid():
        raise SpecError({"spec": _plain(serializer.errors)})
    return _plain(serializer.validated_data)


def _plain(value: Any) -> Any:
    """DRF's ordered dicts and ErrorDetails turned into plain JSON data."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, serializers.ErrorDetail):
        return str(value)
    return value
