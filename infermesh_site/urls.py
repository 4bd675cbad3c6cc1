from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from meshcore.api.urls import urlpatterns as api_urlpatterns


def health(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers: the process answers HTTP."""
    return JsonResponse({"status": "ok"})


# The admin's "View site" link leads to the live dashboard.
admin.site.site_url = "/dashboard/"

urlpatterns = [
    path("", RedirectView.as_view(url="/dashboard/", permanent=False)),
    path("admin/", admin.site.urls),
    path("dashboard/", include("dashboard.urls")),
    path("api/v1/", include(api_urlpatterns)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("healthz", health, name="healthz"),
]

handler400 = "meshcore.error_views.bad_request"
handler403 = "meshcore.error_views.permission_denied"
handler404 = "meshcore.error_views.not_found"
handler500 = "meshcore.error_views.server_error"
