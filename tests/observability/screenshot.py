"""Regenerate docs/live_page.png: a real smoke run with threshold changes over REST mid-run, its records
served by the live page, a change typed into the page's form, then a headless-Chromium screenshot.

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


def train(iterations: int) -> Path:
    """A real smoke run on a local Ray cluster, with two threshold changes over REST at CHANGE_AT."""
    import ray

    ray.init(num_cpus=4, include_dashboard=False, runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}})
    try:
        root = Path(tempfile.mkdtemp(prefix="crlhf-shot-"))
        run = harness.launch(root, "mu_ppo-smoke", ["preset=smoke", "objective=mu_ppo", f"trainer.iterations={iterations}",
                                                    "evaluation.every=2", "checkpoint.every=0"])
        url, token = harness.wait_for(lambda: run.check_alive() or run.control(), 300, "the control plane")
        harness.wait_for(lambda: httpx.get(f"{url}/v1/health").json()["iteration"] >= CHANGE_AT, 600, f"iteration {CHANGE_AT}", every=0.5)
        for name, threshold in CHANGES.items():
            r = httpx.put(f"{url}/v1/constraints/{name}", json={"threshold": threshold},
                          headers={"Authorization": f"Bearer {token}", "X-Crlhf-User": "screenshot"})
            r.raise_for_status()
        assert run.wait(900) == 0
        return run.run_dir
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=harness.ROOT / "docs" / "live_page.png")
    parser.add_argument("--iterations", type=int, default=16)
    parser.add_argument("--from-run", type=Path, help="reuse a finished run directory instead of training a new one")
    args = parser.parse_args()

    run_dir = args.from_run or train(args.iterations)
    replayed = harness.replay(run_dir, run_dir.name, pace=0.2)
    harness.wait_for(replayed.done.is_set, 120, "the replay")
    chrome = browser.chromium(1400, 1900)
    try:
        chrome.get(f"{replayed.url}/live/?poll_ms=500")
        n = len(replayed.records)
        harness.wait_for(lambda: chrome.execute_script(f"return window.crlhfLive.records.length >= {n}"), 60, "records")
        chrome.find_element("css selector", "#form-reward option[value='topic']").click()
        chrome.find_element("css selector", "#form-threshold").send_keys("0.45")
        chrome.find_element("css selector", "#form-token").send_keys(replayed.token)
        chrome.find_element("css selector", "#form-submit").click()
        harness.wait_for(lambda: chrome.find_element("css selector", "#form-result").text.startswith("Queued"), 20, "the change")
        time.sleep(1.5)  # one more poll: the table shows the pending change, the audit list the entry
        args.out.parent.mkdir(parents=True, exist_ok=True)
        chrome.save_screenshot(str(args.out))
        print(f"wrote {args.out}")
    finally:
        chrome.quit()
        replayed.stop()


if __name__ == "__main__":
    main()
