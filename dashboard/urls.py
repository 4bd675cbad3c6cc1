from django.contrib.auth.views import LogoutView
from django.urls import path

from dashboard import views

app_name = "dashboard"

urlpatterns = [
    path("", views.fleet, name="fleet"),
    path("nodes/<slug:name>/", views.node, name="node"),
    path("models/", views.models, name="models"),
    path("events/", views.event_feed, name="events"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", LogoutView.as_view(next_page="dashboard:login"), name="logout"),
]
