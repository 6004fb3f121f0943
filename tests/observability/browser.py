"""Headless Chromium through selenium, with Debian's chromium + chromium-driver (no driver download)."""

from __future__ import annotations

import shutil

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]


def available() -> bool:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False
    return shutil.which("chromium") is not None and shutil.which("chromedriver") is not None


def chromium(width: int = 1400, height: int = 1700):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


# Pixels of a chart's canvas drawn in one series' stroke colour (within a small tolerance for
# anti-aliasing): axes and grid are grey, so a count > 0 means that series has drawn a line.
SERIES_PIXELS_JS = """
const [selector, hex] = arguments;
const el = document.querySelector(selector);
const canvas = el && el.querySelector('canvas');
if (!canvas) return -1;
const want = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
let n = 0;
for (let i = 0; i < data.length; i += 4) {
  if (data[i + 3] > 200 && Math.abs(data[i] - want[0]) < 24 && Math.abs(data[i + 1] - want[1]) < 24 && Math.abs(data[i + 2] - want[2]) < 24) n++;
}
return n;
"""
