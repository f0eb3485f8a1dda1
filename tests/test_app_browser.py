"""The page in a real browser: Debian's Chromium driven by Playwright (no browser download).

Skipped where Chromium or Playwright is missing, unless CSM_STUDIO_REQUIRE_BROWSER=1 (as in CI).
Screenshots are written to tests/artifacts/.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import ARTIFACTS

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None or not CHROMIUM.exists():
        message = "needs /usr/bin/chromium (apt-get install chromium) and the playwright package"
        if os.environ.get("CSM_STUDIO_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, tiny_app):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(30_000)
    page.goto(tiny_app.url)
    page.locator("#generate").wait_for()
    yield page
    page.close()


def audio_elements(page) -> list[dict]:
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('audio')).map(a => ({
               id: a.closest('[id]') ? a.closest('[id]').id : '', src: a.currentSrc || a.src,
               duration: a.duration, ready: a.readyState}))"""
    )


def test_pick_a_preset_type_a_line_generate_and_hear_it(page):
    assert "output is noise" in page.locator("#status-banner").inner_text()  # the tiny model says so

    page.locator("#voice-0 input").click()
    page.get_by_role("option", name="Sol (synthetic, US female)").click()
    page.get_by_text("Hey there, this is Sol.").wait_for()  # the preset's transcript is previewed

    page.locator("#line-text textarea").fill("Hello there, how are you today?")
    page.locator("#generate").click()

    page.locator("#result-info").get_by_text("Seed").wait_for(timeout=60_000)
    if shutil.which("ffmpeg"):  # gradio streams through ffmpeg: the live player holds a playable <audio>
        page.wait_for_function(
            """() => Array.from(document.querySelectorAll('#live-audio audio'))
                         .some(a => a.src && isFinite(a.duration) && a.duration > 0)""",
            timeout=60_000,
        )
        live = [a for a in audio_elements(page) if a["id"] == "live-audio" and a["src"]]
        assert live and live[0]["duration"] > 0
    # The full result has its own player, with a download button.
    page.locator("#result-audio").locator("a[download], button[aria-label*='ownload']").first.wait_for()
    page.screenshot(path=str(ARTIFACTS / "browser-generate.png"), full_page=True)
    info = page.locator("#result-info").inner_text()
    assert "s of audio" in info and "frames" in info
    seed = int(info.split("Seed", 1)[1].split()[0])

    page.get_by_role("button", name=f"Reuse seed {seed}").click()  # the seed used, ready to reuse
    page.locator("#settings").get_by_role("button").first.click()  # open the Settings accordion
    page.wait_for_function(f"() => document.querySelector('#seed input')?.value === '{seed}'")


def test_a_script_becomes_the_conversation_which_can_be_reordered(page):
    page.get_by_label("Script").check()
    page.locator("#script-text textarea").fill("[0] Good morning!\n[1] Morning. Coffee?\n[0] Yes, please.")
    page.locator("#generate").click()
    page.locator("#result-info").get_by_text("Turn n used seed").wait_for(timeout=90_000)
    files = page.locator("#turn-files").inner_text()  # every turn's clip, to download
    assert all(f"turn-{n}-speaker-{s}" in files for n, s in [(1, 0), (2, 1), (3, 0)]), files

    page.get_by_role("button", name="+ Add to the conversation").click()
    rows = page.locator(".turn-row")
    rows.nth(2).wait_for()
    assert rows.count() == 3 and "Yes, please." in rows.nth(2).inner_text()
    rows.nth(2).get_by_role("button", name="↑").click()  # move the last turn up
    page.wait_for_function("() => document.querySelectorAll('.turn-row')[1]?.innerText.includes('Yes, please.')")
    rows.nth(0).get_by_role("button", name="✕").click()  # remove the first
    page.wait_for_function("() => document.querySelectorAll('.turn-row').length === 2")
    assert "Yes, please." in rows.nth(0).inner_text() and "Coffee?" in rows.nth(1).inner_text()

    page.get_by_label("One line").check()  # the next line is generated in that context
    page.locator("#line-text textarea").fill("Here you go.")
    page.locator("#generate").click()
    page.locator("#result-info").get_by_text("frames").wait_for(timeout=60_000)
    page.mouse.move(0, 0)  # no hover highlight in the picture (examples/screenshot.png is one of these)
    page.screenshot(path=str(ARTIFACTS / "browser-conversation.png"), full_page=True)


def test_a_bad_request_shows_its_message_in_the_page(page):
    page.locator("#line-text textarea").fill("   ")
    page.locator("#generate").click()
    page.get_by_text("The text is empty").first.wait_for(timeout=30_000)
    page.wait_for_timeout(800)  # the toast slides in
    page.screenshot(path=str(ARTIFACTS / "browser-error.png"))
    # ...and the page still works afterwards
    page.locator("#line-text textarea").fill("Still here.")
    page.locator("#generate").click()
    page.locator("#result-info").get_by_text("Seed").wait_for(timeout=60_000)


def test_an_own_voice_and_an_uploaded_earlier_turn(page):
    examples = Path(__file__).resolve().parent.parent / "examples"
    page.locator("#voice-1 input").click()
    page.get_by_role("option", name="Own voice: upload or record a clip").click()
    page.locator("#line-text textarea").fill("Testing my own voice.")
    page.locator("#generate").click()
    page.get_by_text("Speaker 1's own voice has no audio").first.wait_for()

    page.locator("#own-audio-1 input[type=file]").set_input_files(str(examples / "atlas.wav"))
    page.locator("#own-text-1 textarea").fill("Good evening. My name is Atlas, and I read the late news.")
    page.get_by_text("Add an earlier turn").click()
    page.locator("#new-turn-audio input[type=file]").set_input_files(str(examples / "sol.wav"))
    page.locator("#add-turn").click()
    page.get_by_text("Turn 1 has no transcript").first.wait_for()
    page.locator("#new-turn-text textarea").fill("Hey there, this is Sol. Let's keep it short and sweet today.")
    page.locator("#add-turn").click()
    page.locator(".turn-row").first.wait_for()
    assert "this is Sol" in page.locator(".turn-row").first.inner_text()

    page.locator("#generate").click()
    page.locator("#result-info").get_by_text("frames").wait_for(timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "browser-own-voice.png"), full_page=True)
