"""What the admin tests share: a signed-in browser, the page's messages, and a loaded form's values."""

from __future__ import annotations

import re
from typing import Any

from django.test import Client

NODE_TOKEN = re.compile(r"imn_[A-Za-z0-9_-]{20,}")
API_TOKEN = re.compile(r"imt_[A-Za-z0-9_-]{20,}")


def browser_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def messages_of(response) -> list[str]:
    """The messages shown on the page the response (followed to its end) rendered."""
    return [str(message) for message in response.context["messages"]]


def loaded_form(response) -> dict[str, Any]:
    """The admin form's values as the page shows them: what a user who changes nothing would post."""
    form = response.context["adminform"].form
    data = {}
    for name in form.fields:
        value = form[name].value()
        if value is None:
            continue
        if isinstance(value, bool):
            if value:
                data[name] = "on"
            continue
        data[name] = value
    return data


def action(name: str, *pks: int) -> dict[str, Any]:
    return {"action": name, "_selected_action": [str(pk) for pk in pks], "index": "0"}
