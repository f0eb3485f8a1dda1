"""The page in a real browser: Debian's Chromium driven by Playwright (no browser download).

Skipped where Chromium or Playwright is missing, unless CSM_STUDIO_REQUIRE_BROWSER=1 (as in CI).
Screenshots are written to tests/artifacts/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
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

    page.locator("#result-info").get_by_text("Seed").first.wait_for(timeout=60_000)
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
    page.locator("#result-info").get_by_text("Turn n used seed").first.wait_for(timeout=90_000)
    files = page.locator("#turn-files").inner_text()  # every turn's clip, to download
    names = ["turn-01-speaker0-river", "turn-02-speaker1-maple", "turn-03-speaker0-river"]  # by content
    assert all(name in files for name in names), files

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
    page.locator("#result-info").get_by_text("First audio").first.wait_for(timeout=60_000)
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
    page.locator("#result-info").get_by_text("Seed").first.wait_for(timeout=60_000)


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
    # Its transcript fills itself (the tiny Whisper's is nonsense): corrected by hand, as a user would.
    page.wait_for_function("() => document.querySelector('#new-turn-text textarea')?.value.trim().length > 0",
                           timeout=60_000)  # fmt: skip
    page.locator("#new-turn-text textarea").fill("Hey there, this is Sol. Let's keep it short and sweet today.")
    page.locator("#add-turn").click()
    page.locator(".turn-row").first.wait_for()
    assert "this is Sol" in page.locator(".turn-row").first.inner_text()

    page.locator("#generate").click()
    page.locator("#result-info").get_by_text("First audio").first.wait_for(timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "browser-own-voice.png"), full_page=True)


def open_settings(page):
    page.locator("#settings").get_by_role("button").first.click()


def test_stop_keeps_every_finished_turn_and_the_interrupted_one(page):
    page.get_by_label("Script").check()
    page.locator("#script-text textarea").fill("[0] One.\n[1] Two.\n[0] Three.\n[1] Four.")
    open_settings(page)
    page.locator("#max-seconds input[type=number]").fill("30")  # long turns (4 x 30 s: the most one request asks)
    page.locator("#max-seconds input[type=number]").press("Enter")
    page.locator("#generate").click()
    page.locator("#status-line").get_by_text("Generated turn 1 of 4").wait_for(timeout=120_000)
    # While it runs, Generate says so and takes no click (gradio would drop one without a word).
    generate = page.locator("#generate")
    assert generate.is_disabled() and "Generating" in generate.inner_text()
    page.wait_for_timeout(1500)  # into turn 2 (30 s of audio, several seconds to make)
    page.locator("#stop").click()
    page.locator("#status-line").get_by_text("Stopped").wait_for(timeout=60_000)
    page.wait_for_function("() => !document.querySelector('#generate').disabled", timeout=15_000)
    assert generate.inner_text().strip() == "▶ Generate"
    info = page.locator("#result-info").inner_text()
    finished = int(info.split("Stopped.", 1)[1].split("of 4 turns finished")[0])
    assert 1 <= finished < 4 and "marked partial" in info
    files = page.locator("#turn-files").inner_text()
    assert "turn-01-speaker0-river" in files and "-partial" in files, files
    page.locator("#result-audio audio").first.wait_for(state="attached")  # the conversation so far, playable
    page.screenshot(path=str(ARTIFACTS / "browser-stopped.png"), full_page=True)
    page.get_by_role("button", name="+ Add to the conversation").click()  # the finished turns join it
    page.wait_for_function(f"() => document.querySelectorAll('.turn-row').length === {finished}")


def test_long_text_is_counted_and_refused_not_cut(page):
    page.locator("#line-text textarea").fill("x" * 5000)
    page.locator("#text-counter").get_by_text("5,000 / 1,000 characters").wait_for()
    assert "too long" in page.locator("#text-counter").inner_text()
    assert len(page.locator("#line-text textarea").input_value()) == 5000  # nothing was cut
    page.locator("#generate").click()
    page.locator("#status-line").get_by_text("The text is 5,000 characters long").wait_for(timeout=30_000)
    # A paste of megabytes: the box holds 20,000 characters (still refused by name, not by the server's
    # body limit, which would leave no message), and Generate works again right after.
    page.locator("#line-text textarea").fill("y" * 100_000)
    assert len(page.locator("#line-text textarea").input_value()) == 20_000
    page.locator("#generate").click()
    page.locator("#status-line").get_by_text("The text is 20,000 characters long").wait_for(timeout=30_000)
    assert "Error" not in page.locator("#result-audio").inner_text()
    page.locator("#line-text textarea").fill("Short again.")
    page.locator("#generate").click()
    page.locator("#result-info").get_by_text("Seed").first.wait_for(timeout=60_000)


def dropdown_options(page, elem_id: str) -> list[str]:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option").first.wait_for()
    options = page.get_by_role("option").all_inner_texts()
    page.keyboard.press("Escape")
    page.locator(f"#{elem_id} input").blur()  # the next click opens the list again
    # Closed before the next read: a list still closing was once read along with the next picker's.
    page.get_by_role("option").first.wait_for(state="detached")
    return [o.strip().splitlines()[-1] for o in options]  # without the ✓ of the chosen one


def options_become(page, elem_id: str, expected: list[str], timeout_s: float = 15) -> list[str]:
    """The picker's options once they equal `expected`, or as they stand after `timeout_s` (a busy machine
    can take more than a moment to send a card's update)."""
    deadline = time.monotonic() + timeout_s
    while (options := dropdown_options(page, elem_id)) != expected and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    return options


def test_speaker_pickers_follow_the_voice_cards_by_name(page):
    assert dropdown_options(page, "line-speaker") == ["0 · River", "1 · Maple"]
    page.get_by_role("button", name="+ Add speaker").click()
    page.get_by_role("button", name="+ Add speaker").click()
    four = ["0 · River", "1 · Maple", "2 · Sol", "3 · Atlas"]
    assert options_become(page, "line-speaker", four) == four
    page.locator("#line-speaker input").click()
    page.get_by_role("option", name="3 · Atlas").click()
    page.get_by_role("button", name="− Remove speaker").click()  # speaker 3's card goes: so does the choice
    page.wait_for_function("() => document.querySelector('#line-speaker input').value === '0 · River'")
    page.locator("#voice-1 input").click()
    page.get_by_role("option", name="Sol (synthetic, US female)").click()
    renamed = ["0 · River", "1 · Sol", "2 · Sol"]
    assert options_become(page, "line-speaker", renamed) == renamed
    page.get_by_text("Add an earlier turn").click()
    assert dropdown_options(page, "new-turn-speaker") == ["0 · River", "1 · Sol", "2 · Sol"]


def test_an_error_leaves_the_last_result_as_it_was(page):
    page.locator("#line-text textarea").fill("Hello there.")
    page.locator("#generate").click()
    page.locator("#result-info").get_by_text("Seed").first.wait_for(timeout=60_000)
    before = page.locator("#result-info").inner_text()
    page.locator("#line-text textarea").fill("")
    page.locator("#generate").click()
    page.locator("#status-line").get_by_text("The text is empty").wait_for(timeout=30_000)
    page.wait_for_timeout(500)
    assert page.locator("#result-info").inner_text() == before
    for elem_id in ("result-audio", "result-info", "live-audio"):
        assert "Error" not in page.locator(f"#{elem_id}").inner_text(), elem_id  # no error badge over it
    page.screenshot(path=str(ARTIFACTS / "browser-error-keeps-result.png"), full_page=True)


def test_a_clip_is_judged_when_it_arrives(page):
    import numpy as np
    import soundfile as sf

    inputs = ARTIFACTS / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    sf.write(inputs / "silent-upload.wav", np.zeros(48_000, np.float32), 24_000)
    sf.write(inputs / "blip.wav", 0.1 * np.ones(4_800, np.float32), 24_000)
    page.locator("#voice-1 input").click()
    page.get_by_role("option", name="Own voice: upload or record a clip").click()
    page.locator("#own-audio-1 input[type=file]").set_input_files(str(inputs / "silent-upload.wav"))
    page.locator("#own-note-1").get_by_text("is silent").wait_for(timeout=30_000)
    page.get_by_text("Add an earlier turn").click()
    page.locator("#new-turn-audio input[type=file]").set_input_files(str(inputs / "blip.wav"))
    page.locator("#new-turn-note").get_by_text("This clip (blip.wav) is only 0.20 s long").wait_for(timeout=30_000)
    # Adding it anyway is refused next to it, and the form stays usable: no error badges over it.
    page.locator("#new-turn-text textarea").fill("A blip.")
    page.locator("#add-turn").click()
    page.locator("#new-turn-note").get_by_text("The clip of turn 1 (blip.wav) is only 0.20 s long").wait_for()
    assert "Error" not in page.locator("#new-turn-audio").inner_text()
    assert page.locator(".turn-row").count() == 0
    sf.write(inputs / "ten-minutes.wav", 0.1 * np.ones(600 * 8000, np.float32), 8000)
    page.locator("#new-turn-audio").get_by_role("button", name="Clear").click()
    page.locator("#new-turn-audio input[type=file]").set_input_files(str(inputs / "ten-minutes.wav"))
    page.locator("#new-turn-note").get_by_text("600 s long; clips of at most 180 s are taken").wait_for(timeout=60_000)
    page.locator("#add-turn").click()
    page.locator("#new-turn-note").get_by_text("The clip of turn 1 (ten-minutes.wav) is 600 s long").wait_for()
    assert page.locator(".turn-row").count() == 0


def test_check_a_clip_for_the_watermark(page):
    page.get_by_role("tab", name="Check a clip").click()
    page.locator("#check-button").click()
    page.locator("#check-result").get_by_text("Upload or record a clip first.").wait_for()
    river = Path(__file__).resolve().parent.parent / "examples" / "river.wav"
    page.locator("#check-audio input[type=file]").set_input_files(str(river))
    page.locator("#check-button").click()
    page.locator("#check-result").get_by_text("Detector's probability").wait_for(timeout=30_000)
    verdict = page.locator("#check-result").inner_text()  # (the tiny model's detector is random: any verdict)
    assert any(v in verdict for v in ("No watermark found", "Made by this app", "another message")), verdict
    page.screenshot(path=str(ARTIFACTS / "browser-check.png"), full_page=True)


def test_a_saved_voice_survives_a_reload_and_every_speaker_is_offered_it(page):
    atlas = Path(__file__).resolve().parent.parent / "examples" / "atlas.wav"
    words = "Good evening. My name is Atlas, and I read the late news."
    page.locator("#voice-1 input").click()
    page.get_by_role("option", name="Own voice: upload or record a clip").click()
    page.locator("#own-audio-1 input[type=file]").set_input_files(str(atlas))
    page.locator("#own-text-1 textarea").fill(words)
    page.locator("#save-name-1 textarea, #save-name-1 input").first.fill("Evening news")
    page.locator("#save-voice-1").click()
    page.get_by_text("Saved “Evening news” in this browser").first.wait_for()

    page.reload()  # the library is in the browser's storage, not the server's memory
    page.locator("#generate").wait_for()
    page.get_by_text("★ My voices, kept in this browser").click()
    page.locator("#my-voices-list").get_by_text("Evening news").wait_for()
    page.locator("#voice-0 input").click()
    page.get_by_role("option", name="★ Evening news (my voice").click()
    page.wait_for_function(f"() => document.querySelector('#own-text-0 textarea')?.value === {words!r}")
    page.locator("#own-audio-0 audio").first.wait_for(state="attached")
    page.locator("#line-text textarea").fill("Tonight, the weather.")
    page.locator("#generate").click()
    page.locator("#result-info").get_by_text("frames").first.wait_for(timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "browser-my-voices.png"), full_page=True)

    page.locator("#my-voices-pick input").click()
    page.get_by_role("option", name="Evening news").click()
    page.locator("#my-voices-delete").click()
    page.locator("#my-voices-list").get_by_text("None saved yet").wait_for()
    page.reload()
    page.locator("#generate").wait_for()
    assert not [o for o in dropdown_options(page, "voice-1") if "Evening news" in o]


def test_a_result_and_an_earlier_turn_become_a_speakers_voice(page):
    page.locator("#line-speaker input").click()
    page.get_by_role("option", name="1 · Maple").click()
    page.locator("#line-text textarea").fill("Use my voice from now on.")
    page.locator("#generate").click()
    page.locator("#use-voice").wait_for(timeout=60_000)
    page.locator("#use-voice").click()  # the result's speaker (1) by default
    page.wait_for_function(
        "() => document.querySelector('#own-text-1 textarea')?.value === 'Use my voice from now on.'"
    )
    assert page.locator("#voice-1 input").input_value() == "Own voice: upload or record a clip"

    page.locator("#keep-result").click()  # into the conversation; its row offers the same
    page.locator(".turn-row").first.wait_for()
    page.locator("#voice-1 input").click()
    page.get_by_role("option", name="Sol (synthetic, US female)").click()
    page.locator(".use-turn-voice").first.click()
    page.wait_for_function("() => document.querySelector('#voice-1 input')?.value.startsWith('Own voice')")
    assert page.locator("#own-text-1 textarea").input_value() == "Use my voice from now on."


def turn_audio(page, turn: int, take: int = 0) -> str:
    """The file a result turn's take plays (the n-th player in the n-th turn)."""
    return page.locator(f"#result-turn-{turn}").first.locator("audio").nth(take).get_attribute("src")


def test_takes_side_by_side_keep_one_and_rate_it(page):
    from tests.conftest import RATINGS

    page.get_by_label("Script").check()
    page.locator("#script-text textarea").fill("[0] First line.\n[1] Second line.")
    page.locator("#takes input[type=number]").fill("3")
    page.locator("#takes input[type=number]").press("Enter")
    page.locator("#generate").click()
    page.locator("#result-turn-1").first.wait_for(timeout=90_000)
    first = page.locator("#result-turn-0").first
    assert [first.locator(".result-take").nth(i).inner_text().split()[0] for i in range(3)] == ["A", "B", "C"]
    assert "✓ kept" in first.locator(".result-take").nth(0).inner_text()
    sources = "() => Array.from(document.querySelectorAll('#result-audio a')).map(a => a.href).join(' ')"
    conversation = page.evaluate(sources)

    first.locator(".result-take").nth(2).get_by_role("button", name="Keep this take").click()
    page.wait_for_function(
        "() => document.querySelector('#result-turn-0')?.querySelectorAll('.result-take')[2]?.innerText.includes('✓ kept')"
    )
    assert "made with the old turn 1" in page.locator("#result-turn-1").first.inner_text()  # turn 2 heard the old one
    page.wait_for_function(f"() => ({sources})() !== {json.dumps(conversation)}")
    page.get_by_role("button", name="⏩ Redo the rest (turns 2 on)").wait_for()

    take_b = page.locator("#result-turn-0").first.locator(".result-take").nth(1)
    take_b.locator("textarea, input[type=text]").first.fill("a bit fast")
    take_b.locator(".rate-bad").click()
    page.get_by_text("Rated turn 1 take B bad").first.wait_for()
    rows = (RATINGS / "ratings.csv").read_text().splitlines()
    assert any(",B," in row and "bad" in row and "a bit fast" in row for row in rows), rows
    page.screenshot(path=str(ARTIFACTS / "browser-takes.png"), full_page=True)


def test_blind_takes_hide_which_is_which_until_one_is_kept(page):
    playlists = []  # a streamed run's live player; a blind run streams nothing and must not ask for any
    page.on("request", lambda request: playlists.append(request.url) if "m3u8" in request.url else None)
    page.locator("#line-text textarea").fill("Which of us is it?")
    page.locator("#takes input[type=number]").fill("4")
    page.locator("#takes input[type=number]").press("Enter")
    page.locator("#blind input").check()
    page.locator("#generate").click()
    page.locator(".result-take").nth(3).wait_for(timeout=90_000)
    page.wait_for_timeout(1000)  # the live player stayed silent: streamed, it would have played take A first
    assert not [a for a in audio_elements(page) if a["id"] == "live-audio" and a["duration"] > 0]
    labels = [page.locator(".result-take").nth(i).inner_text() for i in range(4)]
    assert [label.split()[:2] for label in labels] == [["Take", str(i + 1)] for i in range(4)]
    assert not any("ended by" in label or "length limit" in label for label in labels)  # nothing to tell them apart
    sources = page.evaluate("() => Array.from(document.querySelectorAll('.result-take audio')).map(a => a.src)")
    names = [src.rsplit("/", 1)[-1] for src in sources]  # a download keeps this name: "take-B" would say which
    assert len(set(names)) == 4 and not any("seed" in n or re.search(r"take-[A-D]\b", n) for n in names), names
    # Nor the Result player or the report: the stitched conversation and its figures are take A's.
    assert page.locator("#result-audio audio").count() == 0
    info = page.locator("#result-info").inner_text()
    assert "once a take is kept" in info and not any(w in info for w in ("of audio", "frames", "ended by", "RTF"))
    assert not page.locator("#keep-result").is_visible() and not page.locator("#use-voice").is_visible()  # take A's
    page.locator(".result-take").nth(1).get_by_role("button", name="Keep this take").click()
    page.wait_for_function("() => document.querySelectorAll('.result-take')[1]?.innerText.includes('✓ kept')")
    revealed = [page.locator(".result-take").nth(i).inner_text() for i in range(4)]
    assert sorted(label.split()[0] for label in revealed) == ["A", "B", "C", "D"]  # now labelled, and their lengths
    assert all(" s · " in label for label in revealed)
    page.locator("#result-audio audio").first.wait_for(state="attached")  # the conversation, of the kept take
    page.locator("#keep-result").wait_for(state="visible")
    assert page.get_by_text("Error", exact=True).count() == 0  # the turn picker, offered again, took its value
    assert playlists == []  # an empty stream was once asked for its playlist 100 times a second
    page.locator("#result-info").get_by_text("s of audio").first.wait_for()
    kept_seconds = revealed[1].split(" s · ")[0].split()[-1]  # "C · 0.6 s · length limit · ✓ kept"
    seconds = page.locator("#result-info").inner_text().split(" s of audio")[0].split()[-1]
    assert f"{float(seconds):.1f}" == kept_seconds, (seconds, revealed[1])


def test_redo_a_middle_turn_keeps_the_turns_before_it(page):
    page.get_by_label("Script").check()
    page.locator("#script-text textarea").fill("[0] One.\n[1] Two.\n[0] Three.")
    page.locator("#generate").click()
    page.locator("#result-turn-2").first.wait_for(timeout=90_000)
    before = [turn_audio(page, i) for i in range(3)]
    # Generate is busy while the redo runs (a run queued behind it would escape a Stop meant for both).
    page.evaluate("""() => { window.generateWasBusy = false; const button = document.querySelector('#generate');
        new MutationObserver(() => { if (button.disabled) window.generateWasBusy = true; })
            .observe(button, {attributes: true}); }""")  # fmt: skip
    page.locator("#result-turn-1").first.get_by_role("button", name="🔁 Redo (new seed)").click()
    page.wait_for_function("() => document.querySelector('#result-turn-2')?.innerText.includes('made with the old turn 2')",
                           timeout=90_000)  # fmt: skip
    page.wait_for_function("() => !document.querySelector('#generate').disabled", timeout=15_000)
    assert page.evaluate("() => window.generateWasBusy")
    after = [turn_audio(page, i) for i in range(3)]
    assert after[0] == before[0] and after[1] != before[1] and after[2] == before[2]
    page.get_by_role("button", name="⏩ Redo the rest (turns 3 on)").click()
    page.wait_for_function("() => !document.querySelector('#result-turn-2')?.innerText.includes('made with the old')",
                           timeout=90_000)  # fmt: skip
    assert turn_audio(page, 2) != after[2] and [turn_audio(page, i) for i in range(2)] == after[:2]


def test_an_uploaded_clip_is_cleaned_up_and_transcribed_by_itself(page):
    import numpy as np
    import soundfile as sf

    inputs = ARTIFACTS / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    rate, rng = 24_000, np.random.default_rng(5)
    speech = 0.05 * rng.standard_normal(3 * rate) * np.sin(np.linspace(0, 40, 3 * rate)) ** 2
    sf.write(
        inputs / "padded.wav", np.concatenate([np.zeros(2 * rate), speech, np.zeros(rate)]).astype(np.float32), rate
    )
    page.locator("#voice-1 input").click()
    page.get_by_role("option", name="Own voice: upload or record a clip").click()
    page.locator("#own-audio-1 input[type=file]").set_input_files(str(inputs / "padded.wav"))
    page.locator("#own-note-1").get_by_text("trimmed").wait_for(timeout=30_000)  # what the clean-up did
    page.locator("#own-clean-1 audio").first.wait_for(state="attached")  # and what the model will hear
    page.wait_for_function("() => document.querySelector('#own-text-1 textarea')?.value.trim().length > 0",
                           timeout=60_000)  # fmt: skip
    assert "Filled in automatically (tiny random Whisper" in page.locator("#own-text-1").inner_text()
    page.locator("#own-text-1 textarea").fill("My own words.")  # typed text is the user's: a new clip keeps it
    page.get_by_text("Add an earlier turn").click()
    page.locator("#new-turn-audio input[type=file]").set_input_files(str(inputs / "padded.wav"))
    page.wait_for_function("() => document.querySelector('#new-turn-text textarea')?.value.trim().length > 0",
                           timeout=60_000)  # fmt: skip
    page.locator("#add-turn").click()  # the automatic transcript is enough to add the turn
    page.locator(".turn-row").first.wait_for()
    assert page.locator("#own-text-1 textarea").input_value() == "My own words."
    page.screenshot(path=str(ARTIFACTS / "browser-transcribed.png"), full_page=True)


def copied_link(page, seconds: float = 30) -> str:
    """The deep link once the clipboard holds it. Polled here: wait_for_function takes the promise that
    readText() returns as a truthy value and returns at once, with whatever the clipboard held then."""
    deadline = time.monotonic() + seconds
    while True:
        text = page.evaluate("() => navigator.clipboard.readText()")  # evaluate awaits the promise
        if "deep_link=" in text or time.monotonic() > deadline:
            assert "deep_link=" in text, f"the clipboard holds {text!r}, not a link"
            return text
        page.wait_for_timeout(200)


def test_a_session_is_bundled_shared_by_link_opened_and_reproduced(browser, tiny_app):
    context = browser.new_context(viewport={"width": 1400, "height": 1000},
                                  permissions=["clipboard-read", "clipboard-write"])  # fmt: skip
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(tiny_app.url)
    page.locator("#generate").wait_for()
    page.get_by_label("Script").check()
    script = "[0] Shall we share this?\n[1] Yes, send the link.\n[0] Done."
    page.locator("#script-text textarea").fill(script)
    open_settings(page)
    page.locator("#seed input").fill("77")
    page.locator("#generate").click()
    page.locator("#result-turn-2").first.wait_for(timeout=90_000)
    page.locator("#result-turn-1").first.locator(".rate-good").click()
    page.get_by_text("Rated turn 2 take A good").first.wait_for()
    page.get_by_text("📦 Share, open or reproduce a session").click()
    page.locator("#make-bundle").click()
    page.locator("#session-bundle a").first.wait_for()
    bundle = page.locator("#session-bundle a").first.get_attribute("href")

    page.get_by_role("button", name="🔗 Copy a link to it").click()
    link = copied_link(page)
    shared = context.new_page()  # the link, opened as a colleague would: the page comes back as it was
    shared.goto(link)
    shared.locator("#result-turn-2").first.wait_for(timeout=60_000)
    assert shared.locator("#script-text textarea").input_value() == script
    assert "Yes, send the link." in shared.locator("#result-turn-1").first.inner_text()
    assert "Shall we share this?" in shared.locator("#result-turn-0").first.inner_text()
    assert shared.get_by_role("button", name="+ Add speaker").is_visible()  # buttons keep their labels
    assert shared.get_by_role("button", name="Run").count() == 0

    downloaded = ARTIFACTS / "downloads" / "session.zip"
    downloaded.parent.mkdir(parents=True, exist_ok=True)
    downloaded.write_bytes(page.request.get(bundle).body())
    fresh = context.new_page()
    fresh.goto(tiny_app.url)
    fresh.locator("#generate").wait_for()
    fresh.get_by_text("📦 Share, open or reproduce a session").click()
    fresh.locator("#open-session input[type=file]").set_input_files(str(downloaded))
    fresh.locator("#result-turn-2").first.wait_for(timeout=60_000)
    assert fresh.locator("#script-text textarea").input_value() == script
    rated = fresh.locator("#result-turn-1").first.locator(".rate-good").first.get_attribute("class")
    assert "primary" in rated  # the rating came back with the bundle
    fresh.locator("#reproduce").click()
    fresh.locator("#reproduce-report").get_by_text("Every turn came out the same").wait_for(timeout=90_000)
    assert fresh.locator("#reproduce-report").inner_text().count("✓ yes") == 3
    fresh.screenshot(path=str(ARTIFACTS / "browser-session.png"), full_page=True)
    context.close()
