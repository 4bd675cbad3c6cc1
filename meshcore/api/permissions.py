from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request


class ReadAuthenticatedWriteStaff(BasePermission):
    """Any signed-in user or valid token reads; only staff write."""

    message = "Changing the mesh needs a staff account."

    def has_permission(self, request: Request, view: object) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return request.method in SAFE_METHODS or user.is_staff
