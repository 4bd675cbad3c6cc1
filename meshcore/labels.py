"""Node labels: Kubernetes-style keys (optional DNS prefix, then a name) and short values."""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ValidationError

_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_PREFIX = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
LABEL_KEY = re.compile(rf"^({_PREFIX}/)?{_NAME}$")
LABEL_VALUE = re.compile(rf"^({_NAME})?$")
KEY_RULE = (
    "letters, digits, '-', '_' and '.', at most 63, starting and ending alphanumeric, with an optional 'dns.prefix/'"
)


def validate_label_key(key: Any) -> None:
    if not isinstance(key, str) or len(key) > 253 or not LABEL_KEY.match(key):
        raise ValidationError(f"Invalid label key {key!r}: use {KEY_RULE}.")


def validate_label_value(value: Any) -> None:
    if not isinstance(value, str) or not LABEL_VALUE.match(value):
        raise ValidationError(
            f"Invalid label value {value!r}: a string of at most 63 letters, digits, '-', '_' and '.', "
            "starting and ending alphanumeric (or empty)."
        )


def validate_labels(labels: Any) -> dict[str, str]:
    if not isinstance(labels, dict):
        raise ValidationError("Labels must be an object of key to value.")
    for key, value in labels.items():
        validate_label_key(key)
        validate_label_value(value)
    return labels
