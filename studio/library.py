"""Voices you keep: a small library that lives in the user's browser (gr.BrowserState), not on the server.

Each voice holds its audio itself, Opus-compressed and base64-encoded, so it survives a page reload,
an app restart and a new Space container alike: a server file path would be gone by then. What comes
back from the browser is untrusted input: every entry is checked, sizes first, and a bad one dropped.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import time
import uuid
from pathlib import Path

import numpy as np
import soundfile as sf

from studio.errors import InputError
from studio.inputs import MAX_TRANSCRIPT_CHARS, SAMPLE_RATE, plural
from studio.outputs import OUTPUT_DIR, OUTPUT_TTL_S

# A browser keeps about 5 MB per site, and the whole library travels in a request (1 MB at most,
# studio/guard.py): six voices of up to 20 s, about 60 to 120 KB each, fit both with room.
MAX_SAVED_VOICES = 6
MAX_SAVED_S = 20
MAX_ENCODED_CHARS = 200_000  # base64 of one voice's audio
MAX_NAME_CHARS = 40
STORAGE_KEY = "csm-studio-voices"  # the browser's localStorage key: stable, so a restart keeps the library
# gr.BrowserState encrypts with a secret that it sends to the page: it keeps nothing from the user, so
# a fixed one is as good as a random one, and unlike a random one it still reads the library after a restart.
STORAGE_SECRET = "csm-studio-voice-library-v1"
LIBRARY_DIR = OUTPUT_DIR / "library"  # decoded voices, named by content, for the page's players


SAVED_PREFIX = "saved:"


def saved_value(entry: dict) -> str:
    """A saved voice as a voice picker's value."""
    return f"{SAVED_PREFIX}{entry['id']}"


def encode_audio(audio: np.ndarray) -> str:
    buffer = io.BytesIO()
    sf.write(buffer, audio.astype(np.float32), SAMPLE_RATE, format="OGG", subtype="OPUS")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def new_entry(name, audio: np.ndarray, transcript: str) -> dict:
    """A library entry for 24 kHz mono `audio` and its transcript, or an InputError saying what to change."""
    name = " ".join(str(name or "").split())
    if not name:
        raise InputError("Give the voice a name to save it under.")
    if len(name) > MAX_NAME_CHARS:
        raise InputError(f"The voice's name is {len(name)} characters long; at most {MAX_NAME_CHARS} are kept.")
    transcript = " ".join(str(transcript or "").split())
    if not transcript:
        raise InputError("The voice has no transcript: type the words spoken in the clip before saving it.")
    seconds = len(audio) / SAMPLE_RATE
    if seconds > MAX_SAVED_S:
        raise InputError(
            f"The clip is {seconds:.0f} s long; a saved voice keeps at most {MAX_SAVED_S} s (5 to 20 s is "
            "plenty for a voice): use a shorter clip."
        )
    if seconds < 0.5:
        raise InputError("The clip is too short to be a voice: use 5 to 20 s of speech.")
    encoded = encode_audio(audio)
    digest = hashlib.sha1(encoded.encode("ascii")).hexdigest()[:12]
    return {"id": digest, "name": name, "transcript": transcript[:MAX_TRANSCRIPT_CHARS], "audio": encoded,
            "seconds": round(seconds, 1), "saved": time.strftime("%Y-%m-%d")}  # fmt: skip


def add_entry(library: list, entry: dict) -> list:
    """The library with `entry`; a voice of the same name is replaced (saving again updates it)."""
    kept = [e for e in checked_library(library) if e["name"].lower() != entry["name"].lower()]
    if len(kept) >= MAX_SAVED_VOICES:
        raise InputError(f"{plural(len(kept), 'voice')} are saved, the most this browser keeps: delete one first.")
    return kept + [entry]


def remove_entry(library: list, entry_id: str) -> list:
    return [e for e in checked_library(library) if e["id"] != entry_id]


def checked_library(library) -> list[dict]:
    """The entries of a library as the browser sent it that are well formed; others are dropped."""
    if not isinstance(library, list):
        return []
    good = []
    for entry in library[:MAX_SAVED_VOICES]:
        if not isinstance(entry, dict):
            continue
        fields = [entry.get(key) for key in ("id", "name", "transcript", "audio")]
        if not all(isinstance(value, str) and value for value in fields):
            continue
        if len(entry["audio"]) > MAX_ENCODED_CHARS or len(entry["name"]) > MAX_NAME_CHARS:
            continue
        if len(entry["transcript"]) > MAX_TRANSCRIPT_CHARS or not entry["id"].isalnum():
            continue
        good.append({key: entry[key] for key in ("id", "name", "transcript", "audio", "seconds", "saved")
                     if key in entry})  # fmt: skip
    return good


def find_entry(library, value: str) -> dict | None:
    """The entry a picker's value (`saved:<id>`) names."""
    return next((e for e in checked_library(library) if saved_value(e) == value), None)


def entry_file(entry: dict) -> Path:
    """The entry's audio as a 24 kHz WAV on the server, named by its content (decoded once)."""
    # Named by the audio received, not by the id the browser sent: one user's id cannot fetch another's file.
    path = LIBRARY_DIR / f"{hashlib.sha1(entry['audio'].encode('ascii')).hexdigest()[:16]}.wav"
    if path.is_file():
        return path
    try:
        data = base64.b64decode(entry["audio"], validate=True)
        audio, rate = sf.read(io.BytesIO(data), dtype="float32", frames=(MAX_SAVED_S + 1) * 48_000)
    except (binascii.Error, ValueError, RuntimeError, sf.LibsndfileError):
        raise InputError(f"The saved voice {entry['name']!r} cannot be read: delete it and save it again.") from None
    if rate != SAMPLE_RATE or audio.ndim != 1 or not len(audio):
        raise InputError(f"The saved voice {entry['name']!r} is not a voice this app saved: delete it.")
    LIBRARY_DIR.mkdir(parents=True, exist_ok=True)
    for old in LIBRARY_DIR.glob("*.wav"):  # decoded copies go with the app's other outputs: written again if asked
        if time.time() - old.stat().st_mtime > OUTPUT_TTL_S:
            old.unlink(missing_ok=True)
    partial = path.with_suffix(f".{uuid.uuid4().hex[:8]}.part")
    sf.write(partial, audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    partial.replace(path)
    return path


def library_choices(library) -> list[tuple[str, str]]:
    """The saved voices as voice picker choices: ("★ Ana (my voice, 8 s)", "saved:<id>")."""
    return [(f"★ {e['name']} (my voice, {e.get('seconds', '?')} s)", saved_value(e)) for e in checked_library(library)]
