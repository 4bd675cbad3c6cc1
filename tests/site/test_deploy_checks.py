"""`check --deploy` is clean with production-like settings, and the project's own checks fire."""

import importlib.util

from django.core import checks

from devtools.serve import TEST_SECRET, clean_env, manage
from meshcore.checks import check_asgi_server, check_broker_url, check_debug_exposed, check_wildcard_hosts

PRODUCTION = {
    "SECRET_KEY": TEST_SECRET,
    "ALLOWED_HOSTS": "mesh.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://mesh.example.com",
    "SECURE_SSL_REDIRECT": "1",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "SECURE_HSTS_PRELOAD": "1",
    "SESSION_COOKIE_SECURE": "1",
    "CSRF_COOKIE_SECURE": "1",
}


def test_it_passes_deploy_checks_with_production_settings(tmp_path):
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=clean_env(tmp_path, **PRODUCTION))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_it_warns_about_the_quick_start_defaults_under_deploy(tmp_path):
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=clean_env(tmp_path, SECRET_KEY=TEST_SECRET))
    assert result.returncode != 0
    assert "security.W004" in result.stderr  # HSTS is off until SECURE_HSTS_SECONDS is set


def test_it_reports_an_asgi_server_that_is_not_installed(settings, monkeypatch):
    settings.MESH_ASGI_SERVER = "uvicorn"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    [error] = check_asgi_server(None)
    assert error.id == "meshcore.E001"
    assert "pip install uvicorn" in error.hint


def test_it_reports_a_broker_url_of_the_wrong_kind(settings):
    settings.CELERY_BROKER_URL = "http://broker:80"
    [error] = check_broker_url(None)
    assert error.id == "meshcore.E003"


def test_it_warns_when_debug_is_reachable_from_the_network(settings):
    settings.DEBUG = True
    settings.ALLOWED_HOSTS = ["mesh.example.com"]
    [warning] = check_debug_exposed(None)
    assert warning.id == "meshcore.W001"
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
    assert check_debug_exposed(None) == []


def test_it_warns_about_wildcard_hosts(settings):
    settings.ALLOWED_HOSTS = ["*"]
    assert [w.id for w in check_wildcard_hosts(None)] == ["meshcore.W002"]


def test_its_checks_are_registered():
    registered = {check.__name__ for check in checks.registry.registry.get_checks(include_deployment_checks=True)}
    assert {"check_asgi_server", "check_data_dir", "check_broker_url", "check_debug_exposed"} <= registered
