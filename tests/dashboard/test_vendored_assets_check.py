"""The system check that tells an operator the dashboard's chart library is missing, and how to
install it; and that the markup the fleet page writes by hand escapes what it shows."""

from __future__ import annotations

from dashboard import checks, markup


def test_it_warns_and_names_the_script_when_uplot_is_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(checks, "VENDOR", tmp_path)

    (warning,) = checks.check_vendored_assets()

    assert warning.id == "dashboard.W001"
    assert "uPlot.iife.min.js" in warning.msg
    assert "scripts/vendor-assets" in warning.hint


def test_it_is_quiet_when_every_vendored_file_is_there(monkeypatch, tmp_path):
    for name in checks.VENDORED_FILES:
        (tmp_path / name).write_text("x")
    monkeypatch.setattr(checks, "VENDOR", tmp_path)

    assert checks.check_vendored_assets() == []


def test_it_escapes_what_a_node_card_shows():
    card = {
        "name": "gpu-a",
        "url": "/dashboard/nodes/gpu-a/",
        "zone": '<script>alert("zone")</script>',
        "roles": ["gpu"],
        "labels_text": 'team="<b>"',
        "health": "healthy",
        "stale": False,
        "draining": False,
        "sim": False,
        "age_text": "1 s ago",
        "admin": "/admin/",
        "gpus": [
            {
                "uuid": "GPU-1",
                "index": 0,
                "name": "<img src=x>",
                "texts": {k: "1" for k in "util mem temp power sm".split()},
                "state": "ok",
                "word": "",
            }
        ],
    }

    html = markup.node_card(card, staff=True)

    assert "<script>" not in html and "<img" not in html and "<b>" not in html
    assert "&lt;script&gt;" in html and "&lt;img src=x&gt;" in html
