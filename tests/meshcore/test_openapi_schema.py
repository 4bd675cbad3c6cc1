"""The OpenAPI 3 description: generated without warnings, valid, served at /api/schema/,
and browsable at /api/docs/ with assets from this server (no CDN)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.core.management import call_command

ROOT = Path(settings.BASE_DIR)


def test_it_generates_a_valid_schema_without_warnings_or_errors(tmp_path):
    # A fresh process: drf-spectacular reports each warning once per process and caches enum
    # overrides, so an in-process run after another test could miss them.
    schema_file = tmp_path / "schema.yaml"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    result = subprocess.run(
        [sys.executable, "manage.py", "spectacular", "--fail-on-warn", "--validate", "--file", str(schema_file)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr
    assert "Error" not in result.stderr
    schema = yaml.safe_load(schema_file.read_text())
    assert schema["openapi"].startswith("3.")


def test_it_validates_in_process_too(tmp_path):
    schema_file = tmp_path / "schema.json"

    call_command("spectacular", "--validate", "--format", "openapi-json", "--file", str(schema_file))

    assert '"openapi": "3.' in schema_file.read_text()


def test_it_serves_the_schema(stranger_client):
    response = stranger_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "infermesh API"
    for path in [
        "/api/v1/nodes/",
        "/api/v1/nodes/{name}/",
        "/api/v1/nodes/{name}/drain/",
        "/api/v1/nodes/{name}/undrain/",
        "/api/v1/nodes/{name}/rotate-token/",
        "/api/v1/nodes/{name}/revoke-token/",
        "/api/v1/models/{id}/",
        "/api/v1/runtimes/{id}/",
        "/api/v1/policies/{name}/",
        "/api/v1/tokens/{id}/",
        "/api/v1/gpus/{id}/",
        "/api/v1/instances/{id}/",
        "/api/v1/events/{id}/",
    ]:
        assert path in schema["paths"], path
    assert set(schema["paths"]["/api/v1/gpus/"]) == {"get"}
    assert schema["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token: Authorization: Bearer imt_...",
    }


def test_it_describes_the_once_shown_tokens_and_nullable_prefix(stranger_client):
    schema = stranger_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    components = schema["components"]["schemas"]

    assert "token" in components["NodeWithToken"]["properties"]
    assert "token" not in components["Node"]["properties"]
    assert components["Node"]["properties"]["token_prefix"]["nullable"] is True
    assert "token" in components["ApiTokenWithValue"]["properties"]
    token_id = schema["paths"]["/api/v1/tokens/{id}/"]["get"]["parameters"][0]
    assert token_id["schema"]["type"] == "integer"


def test_it_serves_the_docs_page_with_local_assets(stranger_client):
    response = stranger_client.get("/api/docs/")

    assert response.status_code == 200
    html = response.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets
    assert all(asset.startswith("/static/") for asset in assets), assets
    for cdn in ("cdn.jsdelivr.net", "unpkg.com", "cdnjs.cloudflare.com", "//"):
        assert cdn not in " ".join(assets)
    assert "cdn.jsdelivr.net" not in html
    assert "unpkg.com" not in html


@pytest.mark.parametrize("asset", ["swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css"])
def test_it_serves_the_docs_assets_itself(stranger_client, asset):
    html = stranger_client.get("/api/docs/").content.decode()
    url = next(url for url in re.findall(r'(?:src|href)="([^"]+)"', html) if url.endswith(asset))

    response = stranger_client.get(url)

    assert response.status_code == 200
    assert b"".join(response.streaming_content if response.streaming else [response.content])
