"""The storefront in a real headless Chromium (Debian's, installed by `make`), driven by Playwright against
`shopmind serve` on a trained artifact: search with a typo, filter by a facet, open an item, add it to the
cart, buy a recommended item and see the recommendations change without it. Screenshots go to test-artifacts/."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: `make test` installs the Debian package")
        pytest.skip("chromium not installed")
    return path


@pytest.fixture(scope="module")
def server(served: dict, tmp_path_factory: pytest.TempPathFactory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    state = tmp_path_factory.mktemp("e2e-state")
    env = {**os.environ, **served["env"], "SHOPMIND_SERVING_STATE_DIR": str(state), "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen([sys.executable, "-m", "shopmind.cli", "--store", str(served["store"]), "serve",
                             str(served["artifact"]), "--port", str(port), "--mode", "demo"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode()[-2000:])
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_search_filter_open_buy_and_recommendations_change(server: str) -> None:
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(exist_ok=True)
    for old in SHOTS.glob("failure*"):
        old.unlink()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        console: list[str] = []
        page.on("console", lambda m: console.append(f"console.{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console.append(f"page error: {e}"))
        try:
            _walk(page, server)
        except BaseException:
            # What the page showed and logged when it failed, next to the screenshots.
            page.screenshot(path=str(SHOTS / "failure.png"))
            (SHOTS / "failure-console.txt").write_text("\n".join([page.url, *console]) + "\n")
            raise
        finally:
            browser.close()
        assert not [m for m in console if m.startswith("page error")], console


def _walk(page, server: str) -> None:
    """The shopper's path; each step waits for what the page must show."""
    from playwright.sync_api import expect

    page.goto(server + "/")
    expect(page.locator("#recs .card").first).to_be_visible(timeout=20_000)
    page.screenshot(path=str(SHOTS / "1-home.png"))
    shopper = page.locator("#user").input_value()
    assert shopper != "new-shopper"  # a real shopper with a history is picked first

    page.fill("#q", "starbuks gift card")  # results as you type, typo corrected
    expect(page.locator("#search-status")).to_contain_text("showing results for", timeout=10_000)
    expect(page.locator("#results .card").first).to_be_visible()
    assert "starbucks" in page.locator("#results .card .title").first.inner_text().lower()
    page.screenshot(path=str(SHOTS / "2-search.png"))

    brand = page.locator("#facets input[name='f-brand']").first
    chosen = brand.get_attribute("value")
    brand.check()
    expect(page.locator("#facets input[name='f-brand']:checked")).to_have_attribute("value", chosen)
    expect(page.locator("#results .card .meta").first).to_contain_text(chosen)
    page.screenshot(path=str(SHOTS / "3-filtered.png"))

    page.locator("#results .card .title").first.click()
    expect(page.locator("#item-title")).to_be_visible(timeout=10_000)
    expect(page.get_by_role("heading", name="Knowledge card")).to_be_visible()
    expect(page.get_by_role("heading", name="Similar items")).to_be_visible()
    expect(page.locator("#recs .card").first).to_be_visible(timeout=10_000)
    before = page.locator("#recs .card").evaluate_all("cards => cards.map(c => c.dataset.item)")
    page.screenshot(path=str(SHOTS / "4-item.png"))

    page.locator("article.item [data-action='add_to_cart']").click()
    expect(page.locator("#search-status")).to_contain_text("Added to cart — recommendations updated", timeout=10_000)
    expect(page.locator("#recs-title")).to_have_text("Recommended for you")  # still in the item's context
    # Buy a recommended item: what the shopper bought is never recommended again, so the list must change
    # at once, and without that item.
    shown = page.locator("#recs .card").evaluate_all("cards => cards.map(c => c.dataset.item)")
    bought = shown[0]
    page.locator(f"#recs .card[data-item='{bought}'] [data-action='purchase']").click()
    expect(page.locator("#search-status")).to_contain_text("Bought — recommendations updated", timeout=10_000)
    expect(page.locator(f"#recs .card[data-item='{bought}']")).to_have_count(0, timeout=10_000)
    after = page.locator("#recs .card").evaluate_all("cards => cards.map(c => c.dataset.item)")
    assert after and after != before and bought not in after
    page.screenshot(path=str(SHOTS / "5-after-buying.png"))

    # Keyboard only: search with Enter, open a result with Enter; the skip link is the first stop.
    assert page.evaluate("document.querySelector('a, button, input, select').className") == "skip"
    page.goto(server + "/")
    page.focus("#q")
    page.keyboard.type("gift card")
    page.keyboard.press("Enter")
    expect(page.locator("#results .card").first).to_be_visible(timeout=10_000)
    page.locator("#results .card .title").first.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#item-title")).to_be_visible(timeout=10_000)
    page.goto(server + "/#/dashboard")
    expect(page.get_by_role("heading", name="Live traffic (last minute)")).to_be_visible(timeout=10_000)
    expect(page.locator("#routes tbody tr").first).to_be_visible(timeout=10_000)
    expect(page.locator("#event-types tbody tr").first).to_be_visible(timeout=10_000)
    # Online evaluation from what this shopper was shown and bought: the storefront posted impressions with
    # each list's rec_id, and the purchase of a recommended item carried it too.
    expect(page.locator("#online-h")).to_be_visible(timeout=10_000)
    expect(page.locator("#online table caption", has_text="By source")).to_be_visible(timeout=10_000)
    impressions = int(page.locator("#online .kpi b").nth(2).inner_text())
    assert impressions >= 10
    per_source = page.locator("#online table").first.locator("tbody tr").evaluate_all(
        "rows => rows.map(r => [r.cells[0].innerText, +r.cells[1].innerText, +r.cells[6].innerText])")
    assert 0 < sum(n for _, n, _ in per_source) <= impressions and sum(b for _, _, b in per_source) >= 1, per_source
    page.screenshot(path=str(SHOTS / "6-dashboard.png"), full_page=True)

    # Responsive: on a phone-sized screen nothing is wider than the screen (no sideways scrolling).
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(server + "/#/search?q=gift%20card")
    expect(page.locator("#results .card").first).to_be_visible(timeout=10_000)
    expect(page.locator("#recs .card").first).to_be_visible(timeout=10_000)
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page is {overflow} px wider than a 390 px screen"
    page.screenshot(path=str(SHOTS / "7-phone.png"), full_page=True)

