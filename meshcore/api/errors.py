"""Errors as HTTP answers: 400 with field errors, 404, 409, 503 with Retry-After (no quorum, a busy database)."""

from __future__ import annotations

import logging
from typing import Any

from django.db import IntegrityError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from meshcore.error_views import DATABASE_BUSY, DATABASE_BUSY_RETRY_AFTER_S, database_busy
from meshcore.registry import InvalidChange, RegistryError, Unavailable

logger = logging.getLogger(__name__)


def mesh_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, InvalidChange):
        # DRF's shape: each field maps to a list of messages (or nested errors).
        errors = {
            field: detail if isinstance(detail, list | dict) else [detail] for field, detail in exc.errors.items()
        }
        return Response(errors, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, Unavailable):
        return Response(
            {"detail": exc.message},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(exc.retry_after)},
        )
    if isinstance(exc, RegistryError):
        return Response({"detail": exc.message}, status=exc.status)
    if database_busy(exc):
        return Response(
            {"detail": DATABASE_BUSY},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(DATABASE_BUSY_RETRY_AFTER_S)},
        )
    if isinstance(exc, IntegrityError):
        # The registry maps the conflicts it expects; this is a race it did not foresee.
        logger.warning("integrity error answered as 409: %s", exc)
        return Response(
            {"detail": "This change conflicts with the current state; read it again and retry."}, status=409
        )
    if isinstance(exc, RecursionError):
        # JSON nested thousands deep exhausts the parser's (or encoder's) stack: the input's fault.
        return Response(
            {"detail": "The request body nests too deeply; flatten it."}, status=status.HTTP_400_BAD_REQUEST
        )
    return exception_handler(exc, context)
