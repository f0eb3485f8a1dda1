"""A voice clip from a file: its header checked first, then read, made 24 kHz mono, and checked again.

Checked on upload (a note next to the clip, and the cleaned-up audio to hear) and before generating. Every limit is checked on what
the header declares before a sample is decoded, so a small file cannot make the server decode or
resample gigabytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from csm.audio import AudioInfo, audio_info, load_mono
from csm.generator import Segment
from studio.cleanup import Cleaned, clean_turn, clean_voice_prompt
from studio.errors import InputError, capitalized
from studio.inputs import (
    CLIP_RATES,
    MAX_CLIP_CHANNELS,
    MAX_CLIP_S,
    MAX_CLIPS,
    MAX_REQUEST_CLIP_S,
    MAX_TRANSCRIPT_CHARS,
    SAMPLE_RATE,
    plural,
)

MIN_CLIP_S = 0.5
SILENCE_PEAK = 1e-4  # a clip whose loudest sample is below this holds no voice to imitate
GOOD_CLIP_S = (5, 30)  # what imitates a voice well without filling the context window
SHORT_VOICE_S = 3.0  # a voice prompt shorter than this (once trimmed) gets a hint


def clip_header(path, the_clip: str) -> AudioInfo:
    """What the file declares, checked against the limits; `the_clip` names it in messages."""
    try:
        info = audio_info(path)
    except ValueError:
        raise InputError(
            f"{the_clip} cannot be read as audio: use a WAV, FLAC, OGG or MP3 file that is not corrupt."
        ) from None
    low, high = CLIP_RATES
    if not low <= info.sample_rate <= high:
        raise InputError(
            f"{the_clip} declares a sample rate of {info.sample_rate:,} Hz; "
            f"clips from {low // 1000} to {high // 1000} kHz are read."
        )
    if info.channels > MAX_CLIP_CHANNELS:
        raise InputError(f"{the_clip} has {info.channels} channels; at most {MAX_CLIP_CHANNELS} are read.")
    if info.seconds > MAX_CLIP_S:
        raise InputError(
            f"{the_clip} is {info.seconds:.0f} s long; clips of at most {MAX_CLIP_S} s are taken (the model's "
            f"whole context window is 164 s, and {GOOD_CLIP_S[0]} to {GOOD_CLIP_S[1]} s is plenty for a voice)."
        )
    return info


def check_request_clips(clips: list[tuple[object, str]]) -> None:
    """All of a request's clips, (path, label) each, from their headers alone: each within the limits,
    how many, and how long in all. Nothing is decoded until all of them pass."""
    if len(clips) > MAX_CLIPS:
        raise InputError(f"The request has {len(clips)} clips; at most {MAX_CLIPS} are read.")
    total = 0.0
    for path, label in clips:
        if path and Path(path).is_file():  # a missing one is said when it is read
            total += clip_header(path, f"The clip of {label} ({Path(path).name})").seconds
    if total > MAX_REQUEST_CLIP_S:
        raise InputError(
            f"The request's {plural(len(clips), 'clip')} hold {total:.0f} s of audio together; at most "
            f"{MAX_REQUEST_CLIP_S} s are read (the model's whole window is 164 s)."
        )


def read_clip(path, label: str | None) -> torch.Tensor:
    """The clip's audio at 24 kHz mono, or an InputError that names the clip (`label`, or "this clip") and its file."""
    if not path:
        raise InputError(f"{capitalized(label or 'the clip')} has no audio: upload a clip or record one.")
    name = Path(path).name
    the_clip = f"The clip of {label} ({name})" if label else f"This clip ({name})"
    if not Path(path).is_file():
        raise InputError(f"{the_clip} is no longer on the server (uploads expire after a few hours): add it again.")
    clip_header(path, the_clip)
    try:
        audio = load_mono(path, SAMPLE_RATE, max_seconds=MAX_CLIP_S)  # a header that lied is caught here
    except ValueError:
        raise InputError(
            f"{the_clip} cannot be read as audio, or is longer than its header says: use a WAV, FLAC, OGG or "
            "MP3 file that is not corrupt."
        ) from None
    seconds = len(audio) / SAMPLE_RATE
    if seconds < MIN_CLIP_S:
        raise InputError(
            f"{the_clip} is only {seconds:.2f} s long (a cut-off or truncated file?): use at least a second of speech."
        )
    if float(audio.abs().max()) < SILENCE_PEAK:
        raise InputError(f"{the_clip} is silent: record or upload a clip in which the voice can be heard.")
    return audio


def check_transcript(transcript, label: str) -> None:
    """A transcript's type and length, checked before any clip of the request is read."""
    if transcript is not None and not isinstance(transcript, str):
        raise InputError(f"The transcript of {label} must be text, got {type(transcript).__name__}.")
    if transcript and len(transcript) > MAX_TRANSCRIPT_CHARS:
        raise InputError(
            f"The transcript of {label} is {len(transcript):,} characters long; at most {MAX_TRANSCRIPT_CHARS:,} "
            "are read (a clip the model's window can hold has far fewer)."
        )


def load_clip(path, transcript, speaker: int, label: str) -> Segment:
    """A voice clip and its transcript -> a 24 kHz mono Segment, or an InputError saying what is wrong."""
    check_transcript(transcript, label)
    if path and not (transcript or "").strip():  # a missing clip is said first: read_clip does
        raise InputError(
            f"{capitalized(label)} has no transcript: type the words spoken in the clip, so the model "
            "can tell the voice from the words."
        )
    audio = read_clip(path, label)
    return Segment(speaker, " ".join(transcript.split()), audio)


def cleaned_clip(path, label: str | None, role: str = "turn") -> Cleaned:
    """A clip read (see read_clip) and cleaned up as a voice prompt (`role` "voice": trimmed, cut to its
    best window, loudness set) or as a conversation turn ("turn": its silent ends trimmed)."""
    if role not in ("voice", "turn"):
        raise ValueError(f"role must be 'voice' or 'turn', got {role!r}")
    audio = read_clip(path, label)
    return clean_voice_prompt(audio) if role == "voice" else clean_turn(audio)


@dataclass
class ClipCheck:
    """What a clip is like on arrival, and the audio the model will hear of it."""

    audio: np.ndarray | None  # cleaned up, float32 24 kHz mono; None when the clip cannot be used
    seconds: float = 0.0  # of the cleaned-up audio
    notes: list[str] = field(default_factory=list)  # what the clean-up did
    problems: list[str] = field(default_factory=list)  # what is wrong: the first of an unusable clip says why
    hint: str = ""  # about a usable clip's length, when it is not ideal

    @property
    def note(self) -> str:
        """Markdown to show next to the clip: what is wrong, or that it is fine, then what was cleaned up."""
        if self.audio is None:
            return f"⚠️ {self.problems[0]}" if self.problems else ""
        lines = [f"⚠️ {problem}" for problem in self.problems]
        if not self.problems:
            lines.append(f"ℹ️ {self.hint}" if self.hint else f"✓ {self.seconds:.1f} s of audio")
        if self.notes:
            lines.append("Cleaned up: " + "; ".join(self.notes) + ".")
        return "\n\n".join(lines)


def check_clip_on_arrival(path, room_s: float, role: str = "voice") -> ClipCheck:
    """A clip judged as soon as it arrives: unreadable, silent, too short, too long or clipped, and the
    cleaned-up audio that a generation will use (`role` as in cleaned_clip).

    `room_s`: how long one clip may be next to a reply of the default length (Studio.clip_room_seconds).
    """
    if not path:
        return ClipCheck(None)
    try:
        cleaned = cleaned_clip(path, None, role)
    except InputError as e:
        return ClipCheck(None, problems=[str(e)])
    seconds, problems, hint = cleaned.seconds, list(cleaned.problems), ""
    if seconds > room_s:
        too_long = (
            f"This clip is {seconds:.0f} s long, too long for the model's context: about {room_s:.0f} s fit "
            f"next to a reply. Use a clip of {GOOD_CLIP_S[0]} to {GOOD_CLIP_S[1]} s."
        )
        problems.insert(0, too_long)
    elif seconds > GOOD_CLIP_S[1]:
        hint = (
            f"{seconds:.1f} s: a long clip takes much of the model's context window; "
            f"{GOOD_CLIP_S[0]} to {GOOD_CLIP_S[1]} s is plenty for a voice."
        )
    elif role == "voice" and seconds < SHORT_VOICE_S:
        hint = f"{seconds:.1f} s of voice: the model imitates a voice better from {GOOD_CLIP_S[0]} s of it."
    return ClipCheck(cleaned.audio, seconds, cleaned.notes, problems, hint)


def clip_note(path, room_s: float) -> str:
    """A line to show next to a clip as soon as it arrives: what is wrong with it, or that it is fine.
    It judges the clip as a conversation turn (its ends trimmed); check_clip_on_arrival says more."""
    return check_clip_on_arrival(path, room_s, role="turn").note
