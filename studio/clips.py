"""A voice clip from a file: read, made 24 kHz mono, and checked (on upload, and again before generating)."""

from __future__ import annotations

from pathlib import Path

import torch

from csm.audio import load_audio, to_mono
from csm.generator import Segment
from studio.errors import InputError, capitalized
from studio.inputs import SAMPLE_RATE

MIN_CLIP_S = 0.5
SILENCE_PEAK = 1e-4  # a clip whose loudest sample is below this holds no voice to imitate
GOOD_CLIP_S = (5, 30)  # what imitates a voice well without filling the context window


def read_clip(path, label: str | None) -> torch.Tensor:
    """The clip's audio at 24 kHz mono, or an InputError that names the clip (`label`, or "this clip") and its file."""
    if not path:
        raise InputError(f"{capitalized(label or 'the clip')} has no audio: upload a clip or record one.")
    name = Path(path).name
    the_clip = f"The clip of {label} ({name})" if label else f"This clip ({name})"
    if not Path(path).is_file():
        raise InputError(f"{the_clip} is no longer on the server (uploads expire after a few hours): add it again.")
    try:
        samples, rate = load_audio(path)
        audio = to_mono(samples, rate, SAMPLE_RATE)
    except ValueError:
        raise InputError(
            f"{the_clip} cannot be read as audio: use a WAV, FLAC, OGG or MP3 file that is not corrupt."
        ) from None
    seconds = len(audio) / SAMPLE_RATE
    if seconds < MIN_CLIP_S:
        raise InputError(
            f"{the_clip} is only {seconds:.2f} s long (a cut-off or truncated file?): use at least a second of speech."
        )
    if float(audio.abs().max()) < SILENCE_PEAK:
        raise InputError(f"{the_clip} is silent: record or upload a clip in which the voice can be heard.")
    return audio


def load_clip(path, transcript, speaker: int, label: str) -> Segment:
    """A voice clip and its transcript -> a 24 kHz mono Segment, or an InputError saying what is wrong."""
    has_transcript = isinstance(transcript, str) and transcript.strip()
    if path and not has_transcript:  # a missing clip is said first: read_clip does
        raise InputError(
            f"{capitalized(label)} has no transcript: type the words spoken in the clip, so the model "
            "can tell the voice from the words."
        )
    audio = read_clip(path, label)
    return Segment(speaker, " ".join(transcript.split()), audio)


def clip_note(path, room_s: float) -> str:
    """A line to show next to a clip as soon as it arrives: what is wrong with it, or that it is fine.

    `room_s`: how long one clip may be next to a reply of the default length (Studio.clip_room_seconds).
    """
    if not path:
        return ""
    try:
        seconds = len(read_clip(path, None)) / SAMPLE_RATE
    except InputError as e:
        return f"⚠️ {e}"
    if seconds > room_s:
        return (
            f"⚠️ This clip is {seconds:.0f} s long, too long for the model's context: about {room_s:.0f} s fit "
            f"next to a reply. Use a clip of {GOOD_CLIP_S[0]} to {GOOD_CLIP_S[1]} s."
        )
    if seconds > GOOD_CLIP_S[1]:
        return (
            f"ℹ️ {seconds:.1f} s: a long clip takes much of the model's context window; "
            f"{GOOD_CLIP_S[0]} to {GOOD_CLIP_S[1]} s is plenty for a voice."
        )
    return f"✓ {seconds:.1f} s of audio"
