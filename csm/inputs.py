"""What a generation request is made of, and its checks: every bad input is a ValueError a person can act on."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

FRAME_MS = 80  # Mimi: 12.5 frames per second
MAX_TAKES = 4  # versions of a turn generated in one pass; each is a row of the KV cache


@dataclass
class Segment:
    """One turn of a conversation: who spoke, what they said, and the 1-D audio at the generator's rate."""

    speaker: int
    text: str
    audio: Tensor

    @classmethod
    def from_audio(cls, speaker: int, text: str, audio, sample_rate: int, target_rate: int = 24_000) -> "Segment":
        """Any channel count and sample rate -> a mono Segment at `target_rate`."""
        from csm.audio import to_mono

        return cls(speaker, text, to_mono(audio, sample_rate, target_rate))

    @classmethod
    def from_file(cls, speaker: int, text: str, path, target_rate: int = 24_000) -> "Segment":
        from csm.audio import load_audio

        audio, rate = load_audio(path)
        return cls.from_audio(speaker, text, audio, rate, target_rate)


# ---------------------------------------------------------------------------------------------
# Input checks: every bad input is a ValueError a person can act on.


def check_speaker(speaker, what: str = "speaker") -> None:
    if isinstance(speaker, bool) or not isinstance(speaker, int) or speaker < 0:
        raise ValueError(f"{what} must be a non-negative integer speaker ID such as 0 or 1, got {speaker!r}")


def check_text(text, what: str = "text") -> None:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{what} is empty: type what should be said")


def check_sampling(temperature, topk) -> None:
    if not isinstance(temperature, (int, float)) or not temperature > 0 or temperature != temperature:
        raise ValueError(f"temperature must be a number above 0 (0.9 is typical), got {temperature!r}")
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise ValueError(f"top-k must be an integer of at least 1 (50 is typical; 1 is greedy), got {topk!r}")


def check_max_length(max_audio_length_ms) -> None:
    if not isinstance(max_audio_length_ms, (int, float)) or not max_audio_length_ms >= FRAME_MS:
        raise ValueError(f"max_audio_length_ms must be at least {FRAME_MS} (one frame), got {max_audio_length_ms!r}")


def check_seed(seed) -> None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")


def check_takes(takes) -> None:
    if isinstance(takes, bool) or not isinstance(takes, int) or not 1 <= takes <= MAX_TAKES:
        raise ValueError(
            f"takes (versions of the turn made at once) must be an integer from 1 to {MAX_TAKES}, got {takes!r}"
        )


def check_segment(segment: Segment, index: int, samples_per_frame: int, sample_rate: int) -> None:
    where = f"context clip {index + 1}"
    if not isinstance(segment, Segment):
        raise ValueError(f"{where} must be a csm.generator.Segment, got {type(segment).__name__}")
    check_speaker(segment.speaker, f"{where}: speaker")
    if not isinstance(segment.text, str) or not segment.text.strip():
        raise ValueError(f"{where} has no transcript: type the words spoken in the clip")
    audio = segment.audio
    if not isinstance(audio, Tensor) or audio.dim() != 1:
        shape = tuple(audio.shape) if isinstance(audio, Tensor) else type(audio).__name__
        raise ValueError(
            f"{where}: audio must be a 1-D float tensor at {sample_rate} Hz, got {shape}; "
            "use Segment.from_audio(...) to convert other rates and channel counts"
        )
    if audio.numel() == 0:
        raise ValueError(f"{where}: the audio is empty")
    if not torch.isfinite(audio).all():
        raise ValueError(f"{where}: the audio contains NaN or infinite samples")
    if audio.numel() < samples_per_frame:
        raise ValueError(
            f"{where}: the audio is {1000 * audio.numel() / sample_rate:.0f} ms long, shorter than one "
            f"{FRAME_MS} ms frame; use a clip of at least a second"
        )


def check_context(context, samples_per_frame: int, sample_rate: int) -> list[Segment]:
    """The context as a list, every segment checked."""
    context = list(context or [])
    for i, segment in enumerate(context):
        check_segment(segment, i, samples_per_frame, sample_rate)
    return context


def check_pinned(pinned, context_length: int) -> None:
    if isinstance(pinned, bool) or not isinstance(pinned, int) or not 0 <= pinned <= context_length:
        raise ValueError(
            f"pinned (how many leading context clips are speaker prompts, dropped last) must be an integer "
            f"from 0 to {context_length}, the number of context clips; got {pinned!r}"
        )
