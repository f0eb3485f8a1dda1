"""The voice library kept in the browser: what it stores, and how it treats what the browser sends back."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import soundfile as sf

from studio import library as lib
from studio.errors import InputError
from studio.inputs import SAMPLE_RATE


def voice(seconds: float = 6.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
            + 0.01 * rng.standard_normal(len(t))).astype(np.float32)  # fmt: skip


def test_a_saved_voice_holds_its_audio_compressed_and_comes_back_as_the_same_voice(tmp_path, monkeypatch):
    monkeypatch.setattr(lib, "LIBRARY_DIR", tmp_path)
    audio = voice(12)
    entry = lib.new_entry("  Ana  from   work ", audio, "Hello  there.")
    assert entry["name"] == "Ana from work" and entry["transcript"] == "Hello there." and entry["seconds"] == 12.0
    assert len(entry["audio"]) < 12 * SAMPLE_RATE * 2 / 4  # far smaller than the 16-bit WAV
    path = lib.entry_file(entry)
    back, rate = sf.read(path, dtype="float32")
    assert rate == SAMPLE_RATE and abs(len(back) - len(audio)) < SAMPLE_RATE * 0.05
    n = min(len(back), len(audio))
    # Opus delays the signal a little; compare levels and the correlation at the best lag.
    lags = range(0, 2000, 10)
    best = max(np.corrcoef(back[lag:n], audio[: n - lag])[0, 1] for lag in lags)
    assert best > 0.9 and abs(np.sqrt(np.mean(back**2)) / np.sqrt(np.mean(audio**2)) - 1) < 0.15
    assert lib.library_choices([entry]) == [("★ Ana from work (my voice, 12.0 s)", f"saved:{entry['id']}")]
    assert lib.find_entry([entry], f"saved:{entry['id']}") == entry


def test_saving_is_limited_and_says_what_to_change():
    entries = [lib.new_entry(f"Voice {i}", voice(3, i), "Words.") for i in range(lib.MAX_SAVED_VOICES)]
    library = []
    for entry in entries:
        library = lib.add_entry(library, entry)
    with pytest.raises(InputError, match="6 voices are saved, the most this browser keeps: delete one first"):
        lib.add_entry(library, lib.new_entry("One more", voice(3, 99), "Words."))
    renamed = lib.add_entry(library, lib.new_entry("voice 2", voice(4, 7), "New words."))  # same name: replaced
    assert len(renamed) == len(library) and renamed[-1]["transcript"] == "New words."
    assert [e["id"] for e in lib.remove_entry(library, entries[0]["id"])] == [e["id"] for e in entries[1:]]
    for args, message in [
        (("", voice(), "Words."), "Give the voice a name"),
        (("x" * 41, voice(), "Words."), "at most 40 are kept"),
        (("Name", voice(), "  "), "has no transcript"),
        (("Name", voice(21), "Words."), "keeps at most 20 s"),
        (("Name", voice(0.2), "Words."), "too short"),
    ]:
        with pytest.raises(InputError, match=message):
            lib.new_entry(*args)


def test_what_the_browser_sends_back_is_checked(tmp_path, monkeypatch):
    monkeypatch.setattr(lib, "LIBRARY_DIR", tmp_path)
    good = lib.new_entry("Good", voice(), "Words.")
    sent = [
        good,
        "not an entry",
        {**good, "id": "../../etc"},
        {**good, "audio": "A" * (lib.MAX_ENCODED_CHARS + 1)},
        {**good, "name": None},
        {**good, "extra": "dropped field"},
    ]
    checked = lib.checked_library(sent)
    assert [e["name"] for e in checked] == ["Good", "Good"] and "extra" not in checked[1]
    assert lib.checked_library({"not": "a list"}) == [] and lib.checked_library(None) == []
    for bad_audio in ("not base64!", base64.b64encode(b"RIFF not audio").decode()):
        with pytest.raises(InputError, match="cannot be read: delete it and save it again"):
            lib.entry_file({**good, "audio": bad_audio})
    buffer = __import__("io").BytesIO()
    sf.write(buffer, voice(), 16_000, format="WAV")  # readable audio, but not what this app saves
    with pytest.raises(InputError, match="is not a voice this app saved"):
        lib.entry_file({**good, "audio": base64.b64encode(buffer.getvalue()).decode()})
    # The file is named by the audio received, so an entry claiming another's id gets its own audio.
    other = lib.new_entry("Other", voice(seed=5), "Words.")
    assert lib.entry_file({**other, "id": good["id"]}) != lib.entry_file(good)


def test_the_library_is_read_back_after_a_restart():
    """gr.BrowserState keeps its value under its storage key, encrypted with its secret: both must be the
    same in every run of the app, or a restart would find the library unreadable and start empty."""
    from studio.service import TINY_MODEL, Studio
    from studio.ui import build_app

    def browser_states():
        demo = build_app(Studio(TINY_MODEL))  # not loaded: the layout alone
        return [(b.storage_key, b.secret) for b in demo.blocks.values() if type(b).__name__ == "BrowserState"]

    first, second = browser_states(), browser_states()
    assert first == second == [(lib.STORAGE_KEY, lib.STORAGE_SECRET)]
