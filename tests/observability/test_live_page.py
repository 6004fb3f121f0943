"""The live page in headless Chromium against the control plane of a real run: it loads, charts the run's
records, and a threshold change submitted through its form reaches the coordinator."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from . import browser
from .conftest import MIN_ITERATIONS, Observed, ObservedRun
from .harness import wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not browser.available(), reason="needs selenium and Debian's chromium + chromium-driver"),
]

COLORS = ["#1f6feb", "#d9480f"]  # app.js's palette: series 0 and 1
NEW_THRESHOLD = 0.31


@pytest.fixture(scope="module")
def chrome() -> Iterator:
    driver = browser.chromium()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def run(observed: Observed) -> ObservedRun:
    return observed.run("mu_ppo")


def table_rows(chrome, selector: str) -> list[list[str]]:
    """A table's cell texts, read in one script call: the page rebuilds its tables on every poll, so
    element handles held across calls go stale."""
    return chrome.execute_script(
        "return [...document.querySelectorAll(arguments[0] + ' tbody tr')].map(r => [...r.cells].map(c => c.textContent));", selector
    )


def page_state(chrome, js: str):
    return chrome.execute_script(f"return window.crlhfLive && ({js});")


def test_page_loads_and_charts_the_run(chrome, run: ObservedRun) -> None:
    chrome.get(f"{run.url}/live?poll_ms=500")
    assert chrome.current_url == f"{run.url}/live/?poll_ms=500"  # relative redirect to the page's directory
    wait_for(lambda: page_state(chrome, f"window.crlhfLive.records.length >= {MIN_ITERATIONS - 1}"), 60, "records on the page")
    assert page_state(chrome, "window.crlhfLive.lastError") is None
    assert page_state(chrome, "window.crlhfLive.run") == run.label
    rewards = page_state(chrome, "window.crlhfLive.rewards")
    assert rewards == ["meteor", "topic"]

    history = httpx.get(f"{run.url}/v1/history").json()["records"]
    for i, name in enumerate(rewards):
        selector = f'[data-chart="reward:{name}"]'
        wait_for(lambda s=selector: int(chrome.find_element("css selector", s).get_attribute("data-points") or 0) >= 2 * (MIN_ITERATIONS - 1),
                 30, f"{name}'s chart to plot value and threshold")
        series = page_state(chrome, f"window.crlhfLive.charts['reward:{name}'].series")
        assert series == [f"reward/{name}", f"threshold/{name}"]
        # The chart plots exactly the run's values (the page's copy of the history equals the server's).
        plotted = page_state(chrome, f"window.crlhfLive.records.map(r => r['reward/{name}'])")
        served = [r[f"reward/{name}"] for r in history][: len(plotted)]
        assert plotted[: len(served)] == pytest.approx(served)
        assert chrome.execute_script(browser.SERIES_PIXELS_JS, selector, COLORS[i]) > 20, f"{name}'s line is not drawn"

    violations = page_state(chrome, "window.crlhfLive.charts.violations")
    assert violations["series"] == ["violation/meteor", "violation/topic"] and violations["points"] >= 2 * (MIN_ITERATIONS - 1)
    weights = page_state(chrome, "window.crlhfLive.charts.weights")
    assert {"multiplier/meteor", "multiplier/topic", "weight/kl"} <= set(weights["series"]) and weights["points"] > 0

    # The current-constraints table shows the coordinator's view, multipliers included.
    constraints = {c["name"]: c for c in httpx.get(f"{run.url}/v1/constraints").json()}
    rows = table_rows(chrome, "#constraints")
    assert [r[0] for r in rows] == ["meteor", "topic"]
    for cells in rows:
        assert cells[1] == constraints[cells[0]]["kind"] and cells[2] == "ge"
        assert cells[6] not in ("", "–")  # multiplier
    assert chrome.find_element("css selector", '#status [data-field="objective"]').text == "mu_ppo"

    # Only the page's own files ran: no CSP violation, no script error, no request outside the origin.
    errors = [e["message"] for e in chrome.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_threshold_change_through_the_form_reaches_the_coordinator(chrome, run: ObservedRun) -> None:
    chrome.get(f"{run.url}/live/?poll_ms=500")
    wait_for(lambda: page_state(chrome, "window.crlhfLive.polls >= 1"), 30, "the first poll")
    form_result = lambda: chrome.execute_script("return document.getElementById('form-result').textContent")  # noqa: E731

    def submit(token: str, threshold: float) -> None:
        chrome.find_element("css selector", "#form-reward option[value='meteor']").click()
        field = chrome.find_element("css selector", "#form-threshold")
        field.clear()
        field.send_keys(str(threshold))
        token_field = chrome.find_element("css selector", "#form-token")
        token_field.clear()
        token_field.send_keys(token)
        chrome.find_element("css selector", "#form-submit").click()

    # A wrong token is refused and not remembered.
    submit("not-the-token-0123456789", NEW_THRESHOLD)
    wait_for(lambda: form_result().startswith("Refused (401)"), 20, "the refusal")
    assert chrome.execute_script("return sessionStorage.getItem('crlhf.controlToken')") is None

    submit(run.token, NEW_THRESHOLD)
    wait_for(lambda: form_result().startswith("Queued"), 20, f"the change to be queued (page says {form_result()!r})")
    assert "rewards.meteor.threshold" in form_result() and "applies from iteration" in form_result()
    # The token stays in the tab and never lands in the URL.
    assert chrome.execute_script("return sessionStorage.getItem('crlhf.controlToken')") == run.token
    assert run.token not in chrome.current_url

    # The coordinator has it: audited as the page's change, pending or already in force.
    audit = httpx.get(f"{run.url}/v1/audit").json()
    change = [e for e in audit if e["target"] == "rewards.meteor.threshold"][-1]
    assert change["new"] == NEW_THRESHOLD and change["who"] == "live-page@127.0.0.1"
    view = httpx.get(f"{run.url}/v1/constraints/meteor").json()
    assert view["threshold"] == NEW_THRESHOLD or (view["pending"] or {}).get("threshold") == NEW_THRESHOLD
    # The learner trains the iteration the change applies from with the new threshold.
    applies = change["applies_from"]

    def trained_with_it() -> bool:
        run.launched.check_alive()
        records = httpx.get(f"{run.url}/v1/history", params={"since": applies}).json()["records"]
        return bool(records) and records[0]["threshold/meteor"] == pytest.approx(NEW_THRESHOLD)

    wait_for(trained_with_it, 120, f"iteration {applies} to run with the new threshold", every=1.0)
    # And the page shows it (table refresh; the threshold line moves).
    wait_for(lambda: any("0.31" in cell for row in table_rows(chrome, "#constraints") if row[0] == "meteor" for cell in row),
             30, "the table to show the new threshold")
