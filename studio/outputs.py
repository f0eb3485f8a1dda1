"""Output files: one folder per request in the temp dir (gradio serves from there), named by content."""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import re
import secrets
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import soundfile as sf

from studio.inputs import SAMPLE_RATE, TURN_GAP_S

OUTPUT_DIR = Path(tempfile.gettempdir()) / "csm-studio"
OUTPUT_TTL_S = 6 * 3600  # generated files older than this are deleted


def new_output_dir() -> Path:
    """A fresh folder for one request's files; folders past their time are removed on the way."""
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in OUTPUT_DIR.glob("run-*"):
        if now - old.stat().st_mtime > OUTPUT_TTL_S:
            shutil.rmtree(old, ignore_errors=True)
    folder = OUTPUT_DIR / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    return folder


def slug(name: str) -> str:
    """ "Maple (synthetic)" -> "maple": safe in a file name."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:24]


def speaker_part(speaker: int, voice: str | None) -> str:
    return f"speaker{speaker}-{slug(voice)}" if voice and slug(voice) else f"speaker{speaker}"


def turn_file_name(index: int, speaker: int, voice: str | None, partial: bool = False) -> str:
    """turn-02-speaker1-maple.wav: a download says which turn and whose voice it is."""
    return f"turn-{index + 1:02d}-{speaker_part(speaker, voice)}{'-partial' if partial else ''}.wav"


def line_file_name(speaker: int, voice: str | None, seed: int, partial: bool = False) -> str:
    """speaker1-maple-seed42.wav for a single line: the seed tells two takes of it apart."""
    return f"{speaker_part(speaker, voice)}-seed{seed}{'-partial' if partial else ''}.wav"


def stitch(turns: list[np.ndarray]) -> np.ndarray:
    """The turns one after another, TURN_GAP_S of silence between them."""
    gap = np.zeros(int(TURN_GAP_S * SAMPLE_RATE), np.float32)
    pieces = []
    for i, audio in enumerate(turns):
        pieces += [gap, audio] if i else [audio]
    return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)


def pcm16(audio: np.ndarray) -> np.ndarray:
    """Float samples as 16-bit PCM, for a player given an array: gradio scales float audio to full scale."""
    return np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)


def wav_bytes(audio: np.ndarray) -> bytes:
    """16-bit WAV in memory: what the live player is fed, chunk by chunk."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio, -1, 1), SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


_NAMING_KEY = secrets.token_bytes(16)  # per process: a neutral name cannot be worked out from the file it links


def neutral_link(path: str | Path) -> Path:
    """The same audio under a name that says nothing of it (a blind take's "take-B" would say which it is): a
    hard link beside it (a copy where links fail), made once; stable for this process, unguessable."""
    source = Path(path)
    name = hmac.new(_NAMING_KEY, str(source.resolve()).encode(), hashlib.sha256).hexdigest()[:20]
    target = source.with_name(f"take-{name}{source.suffix}")
    if not target.exists():
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
    return target
