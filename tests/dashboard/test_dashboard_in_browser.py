"""The dashboard in a real Chromium (Playwright driving Debian's chromium), against a running site:
`manage.py serve` on Redis with a real agent (`python -m agents`, simulated GPUs) and a node whose
reports the test sends itself. Screenshots of each step are kept in MESH_TEST_ARTIFACTS
(default var/test-artifacts/dashboard/)."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import httpx
import pytest

from dashboard import formats
from devtools.browser import launch_chromium, sign_in
from devtools.fleet import AgentProcess, ControlPlane
from devtools.serve import REPO, collected_static_root

pytestmark = pytest.mark.timeout(300)

ADMIN_PASSWORD = "an-admin-password-for-e2e"  # devtools.fleet.ControlPlane's throwaway admin
ARTIFACTS = Path(os.environ.get("MESH_TEST_ARTIFACTS", REPO / "var" / "test-artifacts")) / "dashboard"
GIB = 1024**3


class Site:
    def __init__(self, plane: ControlPlane, agent: AgentProcess, push_token: str, api_token: str) -> None:
        self.plane, self.agent, self.push_token, self.api_token = plane, agent, push_token, api_token
        self.url = plane.url
        self.agent_id = uuid.uuid4().hex
        self.seq = 0

    def report(self, util: int, *, runtimes: list | None = None, kind: str = "delta", xid: int | None = None) -> float:
        """Send one report of node gpu-push, as its agent would; when it was sent."""
        self.seq += 1
        gpu = {
            "uuid": "GPU-push-0",
            "index": 0,
            "metrics": {
                "utilization_gpu_pct": util,
                "memory_used_bytes": 30 * GIB,
                "temperature_gpu_c": 55,
                "power_usage_w": 412.0,
                "clocks_mhz": {"sm": 1755},
            },
        }
        if xid is not None:
            gpu["metrics"]["xid_errors"] = {"count": 1, "last": xid, "last_at": time.time()}
        if kind == "snapshot":
            gpu["info"] = {"name": "NVIDIA H100 80GB HBM3", "memory_total_bytes": 80 * GIB, "power_limit_w": 700.0}
        body = {
            "node": "gpu-push",
            "agent": {"id": self.agent_id, "version": "test"},
            "seq": self.seq,
            "kind": kind,
            "interval_s": 5.0,
            "nvml": {"status": "ok"},
            "gpus": [gpu],
            "runtimes": runtimes or [],
        }
        sent = time.monotonic()
        answer = httpx.post(
            f"{self.url}/api/v1/telemetry/", json=body, headers={"Authorization": f"Bearer {self.push_token}"}
        )
        assert answer.status_code == 200 and answer.json()["status"] == "accepted", answer.text
        return sent


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    work = tmp_path_factory.mktemp("dashboard-site")
    plane = ControlPlane(work, STATIC_ROOT=str(collected_static_root()))
    plane.start()
    agent = AgentProcess("gpu-e2e", plane.register_node("gpu-e2e"), plane, work)
    agent.start()
    made = Site(plane, agent, plane.register_node("gpu-push"), plane.api_token())
    made.report(10, kind="snapshot")
    try:
        yield made
    finally:
        agent.stop()
        plane.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, site):
    """A signed-in tab on the fleet page."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    tab = context.new_page()
    sign_in(tab, site.url, "admin", ADMIN_PASSWORD)
    yield tab
    context.close()


def shot(tab, name: str) -> None:
    tab.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def wait_live(tab, snapshots: int = 1) -> None:
    tab.wait_for_function(f"window.Dash && Dash.snapshots >= {snapshots}", timeout=60_000)


def test_it_sends_a_signed_out_browser_to_the_login_page_and_back(browser, site):
    context = browser.new_context(viewport={"width": 1000, "height": 700})
    tab = context.new_page()
    tab.goto(f"{site.url}/dashboard/models/")
    assert tab.url == f"{site.url}/dashboard/login/?next=/dashboard/models/"
    shot(tab, "01-login")

    tab.fill("#id_username", "admin")
    tab.fill("#id_password", ADMIN_PASSWORD)
    with tab.expect_navigation():
        tab.click("button[type=submit]")

    assert tab.url == f"{site.url}/dashboard/models/"
    context.close()


def test_it_shows_every_node_and_its_gpus(page, site):
    page.wait_for_selector('[data-node="gpu-e2e"] .gpu >> nth=1', timeout=60_000)
    wait_live(page)
    page.wait_for_function(
        """document.querySelector('[data-node="gpu-e2e"] [data-f="util"]').textContent.endsWith('%')""",
        timeout=30_000,
    )

    card = page.locator('[data-node="gpu-e2e"]')
    assert card.locator(".gpu").count() == 2  # the agent's two simulated GPUs
    assert card.locator('[data-f="sim"]').is_visible()
    assert page.locator('[data-node="gpu-push"] .gpu').count() == 1
    assert page.locator("#conn").get_attribute("data-state") == "live"
    assert "GiB" in card.locator('[data-f="mem"]').first.text_content()
    shot(page, "02-fleet")


def test_it_shows_a_telemetry_report_on_its_tile_within_a_second(page, site):
    wait_live(page)
    tile = '[data-gpu="GPU-push-0"] [data-f="util"]'
    page.wait_for_selector(tile)

    sent = site.report(73)
    page.wait_for_function(f"document.querySelector('{tile}').textContent === '73 %'", timeout=1000)
    took = time.monotonic() - sent

    print(f"report to tile: {took:.3f} s")
    assert took < 1.0
    shot(page, "03-tile-updated")


def test_it_marks_a_tile_with_an_xid_error_as_it_is_reported(page, site):
    wait_live(page)
    tile = '[data-gpu="GPU-push-0"]'
    page.wait_for_selector(tile)

    site.report(40, xid=79)
    page.wait_for_function(f"document.querySelector('{tile}').dataset.state === 'error'", timeout=5000)
    word = page.text_content(f'{tile} [data-f="word"]')
    shot(page, "03b-xid-error")
    site.report(41)  # the next report without one (an agent restarted): the tile clears

    assert word == "XID 79"
    page.wait_for_function(f"document.querySelector('{tile}').dataset.state !== 'error'", timeout=5000)


def test_it_shows_a_new_event_in_the_live_feed(page, site):
    page.goto(f"{site.url}/dashboard/events/")
    wait_live(page)

    drained = httpx.post(
        f"{site.url}/api/v1/nodes/gpu-push/drain/", headers={"Authorization": f"Bearer {site.api_token}"}
    )
    assert drained.status_code == 200, drained.text

    page.wait_for_selector('#events .ev[data-type="NODE_DRAINING"]', timeout=10_000)
    assert "gpu-push" in page.locator('#events .ev[data-type="NODE_DRAINING"]').first.text_content()
    shot(page, "04-events")
    undrained = httpx.post(
        f"{site.url}/api/v1/nodes/gpu-push/undrain/", headers={"Authorization": f"Bearer {site.api_token}"}
    )
    assert undrained.status_code == 200, undrained.text


def test_it_turns_a_killed_agents_node_unhealthy_and_back(page, site):
    wait_live(page)
    card = '[data-node="gpu-e2e"]'
    page.wait_for_selector(f'{card}[data-health="healthy"]', timeout=60_000)

    site.agent.kill()
    try:
        page.wait_for_selector(f'{card}[data-health="unhealthy"]', timeout=20_000)
        assert page.locator(f'{card} [data-f="health"]').text_content() == "unhealthy"
        assert page.locator(f'{card} .gpu[data-state="stale"]').count() == 2
        shot(page, "05-node-unhealthy")
    finally:
        site.agent.start()
    page.wait_for_selector(f'{card}[data-health="healthy"]', timeout=60_000)
    page.wait_for_selector(f'{card} .gpu:not([data-state="stale"])', timeout=30_000)
    shot(page, "06-node-healthy-again")


def test_it_reconnects_after_a_server_restart(page, site):
    wait_live(page)

    site.plane.serve.stop()
    page.wait_for_function("document.getElementById('conn').dataset.state !== 'live'", timeout=15_000)
    shot(page, "07-reconnecting")
    site.plane.serve.start()
    site.plane.serve.wait_http(timeout=60)

    wait_live(page, snapshots=2)  # a new snapshot: the page resynchronized, without a reload
    assert page.locator("#conn").get_attribute("data-state") == "live"
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    site.report(37)
    page.wait_for_function(
        """document.querySelector('[data-gpu="GPU-push-0"] [data-f="util"]').textContent === '37 %'""",
        timeout=5_000,
    )
    shot(page, "08-reconnected")


def test_it_draws_a_nodes_charts_and_models_where_they_are_loaded(page, site):
    runtime = {
        "name": "triton",
        "url": "http://127.0.0.1:8100",
        "live": True,
        "ready": True,
        "models": [
            {
                "name": "resnet",
                "version": "1",
                "state": "READY",
                "reason": "",
                "stats": {"queue_depth": 2, "inference_per_s": 41.5, "latency_ms": 23.0},
            }
        ],
    }
    site.report(55, runtimes=[runtime])
    page.goto(f"{site.url}/dashboard/nodes/gpu-e2e/")
    wait_live(page)
    page.wait_for_selector("#gpu-1 .uplot", timeout=10_000)
    assert page.locator(".gpu-panel .uplot").count() == 8  # 2 GPUs x utilization, memory, temperature, power
    shot(page, "09-node")

    page.goto(f"{site.url}/dashboard/models/")
    page.wait_for_selector('tr[data-target="gpu-push/triton"]', timeout=15_000)
    row = page.locator('tr[data-target="gpu-push/triton"]')
    assert row.locator('[data-f="state"]').text_content().startswith("READY")
    assert row.locator('[data-f="rate"]').text_content() == "41.5"
    shot(page, "10-models")


def test_it_moves_between_tiles_and_nodes_with_the_keyboard(page, site):
    wait_live(page)
    page.locator(".gpu").first.focus()
    first = page.evaluate("document.activeElement.dataset.gpu")

    page.keyboard.press("ArrowRight")
    second = page.evaluate("document.activeElement.dataset.gpu")
    page.keyboard.press("j")
    heading = page.evaluate("document.activeElement.closest('.node').dataset.node")
    page.keyboard.press("?")

    assert second and second != first
    assert heading == "gpu-push"  # the node after gpu-e2e
    assert page.locator("#help").is_visible()
    shot(page, "11-keyboard-help")


def test_it_writes_units_in_the_browser_as_the_server_does(page, site):
    wait_live(page)
    cases = [None, 0, 37, 100]
    memory = [(None, None), (20480, 81920), (512, 0), (81000, 81920)]
    totals = [(43620 * 1024, 80 * 1024 * 1024), (2048, 4096)]
    power = [(312, 700), (None, 700), (385722, 700000), (9000, 9999)]
    ages = [None, 0.4, 59, 120, 7200]

    browser_side = page.evaluate(
        """([cases, memory, totals, power, ages]) => ({
            pct: cases.map(Dash.fmt.pct), celsius: cases.map(Dash.fmt.celsius), mhz: cases.map(Dash.fmt.mhz),
            mem: memory.map(([u, t]) => Dash.fmt.mem(u, t)),
            memTotal: totals.map(([u, t]) => Dash.fmt.memTotal(u, t)),
            watts: power.map(([v, l]) => Dash.fmt.watts(v, l)),
            powerTotal: power.map(([v, l]) => Dash.fmt.powerTotal(v, l)),
            age: ages.map(Dash.fmt.age),
        })""",
        [cases, memory, totals, power, ages],
    )

    assert browser_side == {
        "pct": [formats.pct(v) for v in cases],
        "celsius": [formats.celsius(v) for v in cases],
        "mhz": [formats.mhz(v) for v in cases],
        "mem": [formats.memory(u, t) for u, t in memory],
        "memTotal": [formats.memory_total(u, t) for u, t in totals],
        "watts": [formats.watts(v, limit) for v, limit in power],
        "powerTotal": [formats.power_total(v, limit) for v, limit in power],
        "age": [formats.age(v) for v in ages],
    }
