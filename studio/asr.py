"""Automatic transcription of voice clips with Whisper, through transformers' speech-recognition pipeline.

Loaded on first use, never at start-up (many users type their transcripts), once per model and device,
however many requests ask at the same time. Each transcription is its own short `@spaces.GPU` call.
A clip is transcribed in pieces of at most 28 s cut at pauses (Whisper hears 30 s at a time), each
piece with a bounded number of new tokens, so a clip of the longest allowed length (180 s) costs at
most a few Whisper calls and gives a bounded text.
"""

from __future__ import annotations

# isort: off
import spaces  # first: on ZeroGPU it must patch torch before anything touches CUDA
# isort: on

import logging
import math
import threading
from dataclasses import dataclass

import soxr

from studio.cleanup import as_array, split_at_pauses
from studio.inputs import MAX_TRANSCRIPT_CHARS, SAMPLE_RATE

log = logging.getLogger("csm-studio")

GPU_MODEL = "openai/whisper-large-v3-turbo"  # 809M, multilingual, ~8x faster than large-v3 for about its accuracy
CPU_MODEL = "openai/whisper-base.en"  # 74M, English (as CSM-1B): a few times faster than small.en on a CPU
TINY = "tiny"  # a tiny random Whisper built offline (studio/tiny_whisper.py): its text is nonsense
TINY_DESCRIPTION = "tiny random Whisper: its text is nonsense"
ASR_RATE = 16_000  # Whisper's
PIECE_S = 28.0  # under Whisper's 30 s window, so each piece is heard whole
MAX_NEW_TOKENS = 224  # per piece: half Whisper's decoder window, far more than 28 s of fast speech needs
TOKENS_PER_S = 7  # fast speech is about 4 words (5-6 tokens) a second; a piece gets 16 + 7 per second
GPU_BASE_S, GPU_S_PER_AUDIO_S = 10, 0.2  # a ZeroGPU call's duration: generous for large-v3-turbo


def default_model(device) -> str:
    """The best model for the device: large-v3-turbo on CUDA, base.en on a CPU (or MPS)."""
    return GPU_MODEL if str(device).startswith("cuda") else CPU_MODEL


class Transcriber:
    """A loaded speech-recognition pipeline; one transcription at a time (the pipeline is not thread-safe)."""

    def __init__(self, pipe, model: str, description: str, beams: int):
        self.pipe, self.model, self.description, self.beams = pipe, model, description, beams
        self._lock = threading.Lock()

    def transcribe(self, audio, rate: int = SAMPLE_RATE) -> str:
        """A clip's words: its pieces transcribed in order and joined, at most MAX_TRANSCRIPT_CHARS."""
        audio = soxr.resample(as_array(audio), rate, ASR_RATE) if rate != ASR_RATE else as_array(audio)
        texts = []
        with self._lock:
            for start, end in split_at_pauses(audio, ASR_RATE, PIECE_S):
                piece = audio[start:end]
                tokens = min(MAX_NEW_TOKENS, 16 + math.ceil(TOKENS_PER_S * len(piece) / ASR_RATE))
                # Greedy on a CPU: five beams (the pipeline's default) cost five times the decoding.
                kwargs = {"max_new_tokens": tokens, "num_beams": self.beams}
                out = self.pipe({"raw": piece, "sampling_rate": ASR_RATE}, generate_kwargs=kwargs)
                texts.append(out["text"].strip())
        return bounded(" ".join(" ".join(texts).split()))


def bounded(text: str, most: int = MAX_TRANSCRIPT_CHARS) -> str:
    """`text` cut to at most `most` characters, at a word boundary."""
    if len(text) <= most:
        return text
    return text[: most + 1].rsplit(" ", 1)[0][:most]


_transcribers: dict[tuple[str, str], Transcriber] = {}
_transcribers_lock = threading.Lock()


def load_transcriber(model: str, device: str) -> Transcriber:
    """The pipeline for `model` ("tiny", a Hub id or a local folder) on `device`, loaded on the first call.

    Callers that ask while it loads wait for that one load; a failed load raises, and is tried again
    by the next caller (a network may have come back)."""
    key = (model, str(device))
    with _transcribers_lock:
        if key not in _transcribers:
            _transcribers[key] = _build(model, str(device))
        return _transcribers[key]


def is_loaded(model: str, device: str) -> bool:
    return (model, str(device)) in _transcribers


def _build(model: str, device: str) -> Transcriber:
    import torch
    from transformers import pipeline

    source, description = model, model
    if model == TINY:
        from studio.tiny_whisper import tiny_whisper_dir

        source, description = str(tiny_whisper_dir()), TINY_DESCRIPTION
    cuda = device.startswith("cuda")
    pipe = pipeline("automatic-speech-recognition", model=source, device=device,
                    dtype=torch.float16 if cuda else torch.float32)  # fmt: skip
    log.info("Loaded the speech recogniser %s on %s", description, device)
    return Transcriber(pipe, model, description, beams=5 if cuda else 1)


def gpu_seconds(model: str, device: str, audio) -> int:
    """The ZeroGPU duration of one transcription (spaces.GPU calls it with the same arguments)."""
    return int(GPU_BASE_S + GPU_S_PER_AUDIO_S * len(audio) / SAMPLE_RATE)


@spaces.GPU(duration=gpu_seconds)
def transcribe_on_device(model: str, device: str, audio) -> str:
    """One transcription, on the GPU where there is one. The pipeline is loaded before this is called
    (outside the GPU's time), so here it is only looked up."""
    return load_transcriber(model, device).transcribe(audio)


@dataclass(frozen=True)
class Transcription:
    text: str
    model: str  # how users see the model named, e.g. "openai/whisper-base.en"
