"""Regenerate docs/live_page.png: a real smoke run with threshold changes over REST mid-run, its own live
page in headless Chromium, a change typed into the page's form, then a screenshot; the run is then stopped.

    HF_HUB_OFFLINE=1 RAY_AUTH_MODE=disabled .venv/bin/python -m tests.observability.screenshot [--out PATH]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx

from . import browser, harness

CHANGES = {"topic": 0.40, "meteor": 0.05}  # applied over REST once the run reaches CHANGE_AT
CHANGE_AT = 6


def main() -> None:
    import ray

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=harness.ROOT / "docs" / "live_page.png")
    parser.add_argument("--iterations", type=int, default=16, help="iterations on the page when it is shot")
    args = parser.parse_args()

    ray.init(address="local", num_cpus=4, include_dashboard=False, runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}})
    root = Path(tempfile.mkdtemp(prefix="crlhf-shot-"))
    # Many more iterations than shown: the run must still be serving its page when the shot is taken.
    run = harness.launch(root, "mu_ppo-smoke", ["preset=smoke", "objective=mu_ppo", "trainer.iterations=1000",
                                                "evaluation.every=2", "checkpoint.every=0"])
    url, token = harness.wait_for(lambda: run.check_alive() or run.control(), 300, "the control plane")
    chrome = None
    try:
        def reached(k: int) -> bool:
            run.check_alive()
            return httpx.get(f"{url}/v1/health").json()["iteration"] >= k

        harness.wait_for(lambda: reached(CHANGE_AT), 600, f"iteration {CHANGE_AT}", every=0.5)
        for name, threshold in CHANGES.items():
            r = httpx.put(f"{url}/v1/constraints/{name}", json={"threshold": threshold},
                          headers={"Authorization": f"Bearer {token}", "X-Crlhf-User": "screenshot"})
            r.raise_for_status()
        harness.wait_for(lambda: reached(args.iterations - 1), 900, f"iteration {args.iterations - 1}", every=0.5)
        httpx.post(f"{url}/v1/pause", headers={"Authorization": f"Bearer {token}"}).raise_for_status()
        chrome = browser.chromium(1400, 1900)
        chrome.get(f"{url}/live/?poll_ms=500")
        harness.wait_for(lambda: chrome.execute_script(f"return window.crlhfLive.records.length >= {args.iterations}"), 60, "records")
        chrome.find_element("css selector", "#form-reward option[value='topic']").click()
        chrome.find_element("css selector", "#form-threshold").send_keys("0.45")
        chrome.find_element("css selector", "#form-token").send_keys(token)
        chrome.find_element("css selector", "#form-submit").click()
        harness.wait_for(lambda: chrome.find_element("css selector", "#form-result").text.startswith("Queued"), 20, "the change")
        time.sleep(1.5)  # one more poll: the table shows the pending change, the audit list the entry
        args.out.parent.mkdir(parents=True, exist_ok=True)
        chrome.save_screenshot(str(args.out))
        print(f"wrote {args.out}")
    finally:
        if chrome is not None:
            chrome.quit()
        run.stop(url, token)
        ray.shutdown()


if __name__ == "__main__":
    main()
