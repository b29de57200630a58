"""Drives the web page of a running `prophetkv serve` in headless Chromium
(Debian's chromium and chromium-driver, through selenium): registers two
documents in the Documents tab, asks the needle question, and checks that the
answer appears next to full prefill's, that the needle's tokens are marked
recomputed, and that the timeline shows. Saves screenshots at 1280 and 800
pixels wide.

Usage: ui_check.py --base-url http://127.0.0.1:PORT --screenshots docs
Exits non-zero on the first failed check.
"""

import argparse
import json
import os
import sys

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

TASK = "code-s102-n8-t2000-3"  # tasks/dev-niah.jsonl: the needle is in its document 4
QUESTION = "What is the access code for the Aurora project?"


def documents(tasks):
    """Two documents of the needle task, a distractor first (a first
    document's cache is exact, so it is never recomputed), and the answer."""
    with open(tasks, encoding="utf-8") as f:
        for line in f:
            task = json.loads(line)
            if task["id"] == TASK:
                docs = task["documents"]
                return [("doc-1", docs[0]), ("doc-2", docs[3])], task["answers"][0]
    sys.exit(f"{TASK} not in {tasks}")


def needle_tokens(spans, needle):
    """The spans whose text spells `needle` (digits may be a token each)."""
    for start in range(len(spans)):
        if not spans[start][0].strip():
            continue
        text = ""
        for end in range(start, len(spans)):
            text += spans[end][0].strip()
            if text == needle:
                return spans[start:end + 1]
            if not needle.startswith(text):
                break
    return None


def check(condition, what):
    if not condition:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}")


def browser(width):
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},1500"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--screenshots", required=True)
    parser.add_argument("--api-key", default="")
    parser.add_argument("--tasks", default="tasks/dev-niah.jsonl")
    args = parser.parse_args()
    DOCUMENTS, NEEDLE = documents(args.tasks)

    driver = browser(1280)
    wait = WebDriverWait(driver, 300)
    try:
        driver.get(f"{args.base_url}/ui")
        check(driver.title == "prophetkv", "the page loads")
        if args.api_key:
            key = driver.find_element(By.ID, "api-key")
            key.send_keys(args.api_key, Keys.TAB)

        # The Documents tab, by keyboard: focus the Ask tab, arrow right.
        driver.find_element(By.ID, "tab-ask").send_keys(Keys.ARROW_RIGHT)
        check(driver.find_element(By.ID, "docs").is_displayed(), "arrow keys switch tabs")
        for doc_id, text in DOCUMENTS:
            driver.find_element(By.ID, "doc-id").send_keys(doc_id)
            driver.find_element(By.ID, "doc-text").send_keys(text)
            driver.find_element(By.CSS_SELECTOR, "#add-form button").click()
            wait.until(lambda d, i=doc_id: i in d.find_element(By.ID, "doc-table").text)
        check(all(i in driver.find_element(By.ID, "doc-table").text for i, _ in DOCUMENTS),
              "both documents are listed")
        wait.until(lambda d: d.find_element(By.ID, "doc-table").text.count("ready") == 2)
        check(True, "both documents become ready in the background")

        driver.find_element(By.ID, "tab-ask").click()
        driver.find_element(By.ID, "question").send_keys(QUESTION)
        # At 0.3 four of the needle's five digit tokens are chosen here: a
        # margin of one over the majority this checks for.
        ratio = driver.find_element(By.ID, "ratio")
        ratio.send_keys(Keys.CONTROL, "a")
        ratio.send_keys("0.3")
        driver.find_element(By.ID, "ask-button").click()
        wait.until(ec.visibility_of_element_located((By.ID, "explain-box")))
        reuse = driver.find_element(By.ID, "answer-reuse").text
        full = driver.find_element(By.ID, "answer-full").text
        check(NEEDLE in reuse, f"the reuse answer appears: {reuse!r}")
        check(bool(full.strip()), f"full prefill's answer appears beside it: {full!r}")

        # The context's tokens, and which of them spell the needle.
        spans = [(s.get_attribute("textContent"), "recomputed" in s.get_attribute("class"))
                 for s in driver.find_elements(By.CSS_SELECTOR, "#context .tok")]
        needle = needle_tokens(spans, NEEDLE)
        check(needle is not None, "the needle is in the context view")
        marked = [text for text, recomputed in needle if recomputed]
        check(len(marked) * 2 > len(needle),
              f"the needle's tokens are marked recomputed: {len(marked)} of {len(needle)} "
              f"({[t for t, _ in needle]} -> {marked})")
        first_reuse = driver.find_element(By.ID, "first-reuse").text
        first_full = driver.find_element(By.ID, "first-full").text
        check(first_reuse.startswith("first token:") and first_full.startswith("first token:"),
              f"first-token probabilities side by side: {first_reuse!r} | {first_full!r}")
        bars = driver.find_elements(By.CSS_SELECTOR, "#doc-bars .bar")
        check(len(bars) == 2, "a budget bar per document")
        rows = driver.find_elements(By.CSS_SELECTOR, "#timeline .tl-row")
        check(driver.find_element(By.ID, "timeline-box").is_displayed() and len(rows) == 6,
              "the timeline shows")

        os.makedirs(args.screenshots, exist_ok=True)
        for width in (1280, 800):
            driver.set_window_size(width, 1500)
            path = os.path.join(args.screenshots, f"ui-{width}.png")
            driver.save_screenshot(path)
            check(os.path.getsize(path) > 10_000, f"screenshot {path}")

        # A document deleted in the Documents tab is gone from both lists.
        driver.find_element(By.ID, "tab-docs").click()
        driver.find_element(By.CSS_SELECTOR, "button[aria-label='Delete doc-1']").click()
        wait.until(lambda d: "doc-1" not in d.find_element(By.ID, "doc-table").text)
        check("doc-1" not in driver.find_element(By.ID, "doc-picks").text,
              "a deleted document leaves both lists")
    finally:
        driver.quit()
    print("all checks passed")


if __name__ == "__main__":
    main()
