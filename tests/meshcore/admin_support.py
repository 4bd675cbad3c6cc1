"""What the admin tests share: a signed-in browser, the page's messages, a loaded form's values,
and a pin policy's change page opened for editing."""

from __future__ import annotations

import re
from typing import Any

from django.test import Client
from django.urls import reverse

from meshcore import registry
from meshcore.models import Policy

NODE_TOKEN = re.compile(r"imn_[A-Za-z0-9_-]{20,}")
API_TOKEN = re.compile(r"imt_[A-Za-z0-9_-]{20,}")
PIN_SPEC = {"model": "resnet50", "nodes": ["gpu-a"]}


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


def pin_policy_form(user) -> tuple[Policy, str, Client, dict[str, Any]]:
    """A pin policy `pin-resnet` created by `user`, and its admin change page opened in `user`'s
    browser: the policy, the page's URL, the browser and the form's values as loaded."""
    policy = registry.create_policy(actor=user, name="pin-resnet", kind="pin", spec=PIN_SPEC)
    url = reverse("admin:meshcore_policy_change", args=[policy.pk])
    browser = browser_for(user)
    return policy, url, browser, loaded_form(browser.get(url))


def action(name: str, *pks: int) -> dict[str, Any]:
    return {"action": name, "_selected_action": [str(pk) for pk in pks], "index": "0"}
