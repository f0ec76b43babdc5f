"""The page at ``/`` in a real browser (Playwright driving Debian's Chromium, headless): upload images,
add a few-shot example, ask, and read the streamed answer, which must equal the API's answer."""

from __future__ import annotations

import os
import shutil

import pytest
from serve_helpers import data_url, picture, post

sync_api = pytest.importorskip("playwright.sync_api", reason="the page test needs playwright (the dev extra)")

CHROMIUM = os.environ.get("FLAMINGO_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


def ask_on_page(page, tmp_path, decoding: str) -> str:
    shot, query = tmp_path / "shot.png", tmp_path / "query.png"
    shot.write_bytes(picture(11))
    query.write_bytes(picture(12))
    page.click("#add-example")
    page.set_input_files(".example-image", str(shot))
    page.wait_for_selector(".example img:not([hidden])")
    page.fill(".example-prompt", "Output:")
    page.fill(".example-answer", "a red square.")
    page.set_input_files("#query-image-input", str(query))
    page.wait_for_selector(".query-image")
    page.click("#add-text")
    page.fill(".query-text", "Output:")
    page.select_option("#decoding", decoding)
    page.fill("#max-tokens", "10")
    page.click("#submit")
    page.wait_for_selector('#status[data-state="done"]', timeout=60_000)
    assert "ms" in page.inner_text("#latency")
    return page.inner_text("#answer")


def api_answer(url: str, key: str | None, num_beams: int) -> str:
    messages = [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(picture(11))}},
                                     {"type": "text", "text": "Output:"}]},
        {"role": "assistant", "content": "a red square."},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(picture(12))}},
                                     {"type": "text", "text": "Output:"}]},
    ]  # fmt: skip
    status, body = post(f"{url}/v1/chat/completions", {"messages": messages, "max_tokens": 10, "temperature": 0,
                                                        "num_beams": num_beams}, key=key)  # fmt: skip
    assert status == 200
    return body["choices"][0]["message"]["content"]


@pytest.mark.parametrize("decoding", ["greedy", "beam"])
def test_the_page_streams_the_apis_answer(make_server, browser, tmp_path, decoding):
    with make_server(api_key="page-key") as (url, _):
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        page.goto(url)
        page.fill("#api-key", "page-key")
        answer = ask_on_page(page, tmp_path, decoding)
        page.screenshot(path=str(tmp_path / "serve_page.png"), full_page=True)
        assert (tmp_path / "serve_page.png").stat().st_size > 0
        assert answer == api_answer(url, "page-key", 3 if decoding == "beam" else 1)
        assert page.get_attribute("#status", "data-state") == "done"
        page.close()


def test_the_page_shows_a_wrong_key(make_server, browser, tmp_path):
    with make_server(api_key="page-key") as (url, _):
        page = browser.new_page()
        page.goto(url)
        page.fill("#api-key", "wrong")
        page.click("#add-text")
        page.fill(".query-text", "hello")
        page.click("#submit")
        page.wait_for_selector('#status[data-state="failed"]', timeout=30_000)
        assert page.inner_text("#answer").startswith("401")
        page.close()
