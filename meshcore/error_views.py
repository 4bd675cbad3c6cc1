"""Error pages: JSON under /api/ (never a stack trace), Django's plain pages elsewhere."""

from __future__ import annotations

import sys

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from psycopg_pool import PoolTimeout

DATABASE_BUSY = "The database is busy (no free connection in this process's pool); retry shortly."
DATABASE_BUSY_RETRY_AFTER_S = 2


def database_busy(error: BaseException | None) -> bool:
    """The error is the connection pool running out: a load peak the client should retry, not a fault."""
    while error is not None:
        if isinstance(error, PoolTimeout):
            return True
        error = error.__cause__
    return False


def _wants_json(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"detail": "Bad request."}, status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"detail": "You do not have permission to do this."}, status=403)
    return defaults.permission_denied(request, exception)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"detail": f"Nothing at {request.path}. The API index is /api/v1/."}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    # Django calls this while handling the exception, so it is still current here.
    if database_busy(sys.exc_info()[1]):
        headers = {"Retry-After": str(DATABASE_BUSY_RETRY_AFTER_S)}
        if _wants_json(request):
            return JsonResponse({"detail": DATABASE_BUSY}, status=503, headers=headers)
        return HttpResponse(DATABASE_BUSY, status=503, content_type="text/plain", headers=headers)
    if _wants_json(request):
        request_id = getattr(request, "request_id", "")
        return JsonResponse({"detail": "Internal error; it has been logged.", "request_id": request_id}, status=500)
    return defaults.server_error(request)
