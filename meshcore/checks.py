"""System checks for infermesh's own settings, with IDs (meshcore.E001...) listed in
docs/configuration.md. Values that cannot be parsed at all fail earlier, in settings."""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from django.conf import settings
from django.core.checks import Error, Warning, register

_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}


@register()
def check_asgi_server(app_configs: Any, **kwargs: Any) -> list:
    server = settings.MESH_ASGI_SERVER
    if importlib.util.find_spec(server) is None:
        return [
            Error(
                f"MESH_ASGI_SERVER={server} but {server} is not installed.",
                hint=f"pip install {server}, or set MESH_ASGI_SERVER to the other server (uvicorn or daphne).",
                id="meshcore.E001",
            )
        ]
    return []


@register()
def check_data_dir(app_configs: Any, **kwargs: Any) -> list:
    data_dir = settings.MESH_DATA_DIR
    if data_dir.exists() and not os.access(data_dir, os.W_OK):
        return [
            Error(
                f"MESH_DATA_DIR {data_dir} is not writable.",
                hint="Point MESH_DATA_DIR at a folder this process can write (database, keys, Raft journal).",
                id="meshcore.E002",
            )
        ]
    return []


@register()
def check_broker_url(app_configs: Any, **kwargs: Any) -> list:
    broker = settings.CELERY_BROKER_URL
    if broker and not broker.startswith(("redis://", "rediss://", "amqp://", "amqps://", "unix://")):
        return [
            Error(
                f"CELERY_BROKER_URL {broker!r} is not a Redis or AMQP URL.",
                hint="Use redis://HOST:PORT/DB (rediss:// with TLS) or amqp://USER:PASSWORD@HOST/VHOST.",
                id="meshcore.E003",
            )
        ]
    return []


@register(deploy=True)
def check_debug_exposed(app_configs: Any, **kwargs: Any) -> list:
    if settings.DEBUG and set(settings.ALLOWED_HOSTS) - _LOOPBACK_HOSTS:
        return [
            Warning(
                "DEBUG is on while ALLOWED_HOSTS admits non-loopback hosts.",
                hint="DEBUG pages show settings and code; turn DEBUG off for anything reachable from a network.",
                id="meshcore.W001",
            )
        ]
    return []


@register(deploy=True)
def check_wildcard_hosts(app_configs: Any, **kwargs: Any) -> list:
    if "*" in settings.ALLOWED_HOSTS:
        return [
            Warning(
                "ALLOWED_HOSTS contains '*'.",
                hint="List the host names clients use; '*' lets any Host header through (cache poisoning, bad links).",
                id="meshcore.W002",
            )
        ]
    return []
