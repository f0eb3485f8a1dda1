"""One request's turns, generated in order on the device: the only code that needs the GPU."""

from __future__ import annotations

# isort: off
import spaces  # first: on ZeroGPU it must patch torch before anything touches CUDA
# isort: on

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from csm.generator import FRAME_MS, Segment, load_csm_1b
from studio.errors import user_facing_errors
from studio.inputs import SAMPLE_RATE, Line, Settings

# ZeroGPU time asked for per request: start-up (CUDA graph capture, prefill) plus a generous
# rate per second of requested audio; the model usually stops well before the limit.
GPU_BASE_S = 10
GPU_S_PER_AUDIO_S = 1.0
GPU_MAX_S = 120


@dataclass
class ContextClip:
    segment: Segment
    label: str  # how messages name it, e.g. "speaker 0's voice (Maple)" or "context turn 2"
    is_prompt: bool = False  # a speaker prompt: left out of a full window only when nothing else is left


@dataclass
class Job:
    """Everything one request generates: lines in order, each in the context of the clips and the lines before."""

    model_key: dict  # load_csm_1b's arguments: the generator loaded at start-up is cached under them
    lines: list[Line]
    context: list[ContextClip]  # speaker prompts first, then the conversation so far
    settings: Settings
    seed: int  # the first line's seed; line i uses seed + i
    voices: dict[int, str] = field(default_factory=dict)  # speaker -> the name of its voice prompt
    notes: list[str] = field(default_factory=list)  # said with the result (e.g. a speaker without a voice)


@dataclass
class TurnReport:
    index: int
    speaker: int
    text: str
    seed: int
    frames: int
    seconds: float
    ended_by_model: bool
    dropped_context: list[str] = field(default_factory=list)
    generation_s: float = 0.0
    reused_context_frames: int = 0  # context the model still held from the request before: not recomputed
    voice: str | None = None
    stopped: bool = False  # cut short by the user's Stop: the audio ends mid-turn


@dataclass
class Chunk:
    turn: int
    audio: np.ndarray  # float32 at SAMPLE_RATE


@dataclass
class TurnDone:
    audio: np.ndarray
    report: TurnReport


def gpu_seconds(job: Job) -> int:
    """The ZeroGPU duration for a job (spaces.GPU calls it with the job)."""
    return int(min(GPU_MAX_S, GPU_BASE_S + GPU_S_PER_AUDIO_S * job.settings.max_seconds * len(job.lines)))


_generation_lock = threading.Lock()  # one job at a time: a script's turns run back to back


@spaces.GPU(duration=gpu_seconds)
def run_job(job: Job) -> Iterator[Chunk | TurnDone]:
    """Generate the job's lines in order, yielding audio chunks as they come and a TurnDone per line."""
    # On ZeroGPU this runs in a worker process, from which only a gr.Error brings its message back.
    with user_facing_errors():
        yield from generate_lines(job)


def generate_lines(job: Job) -> Iterator[Chunk | TurnDone]:
    generator = load_csm_1b(**job.model_key)  # cached: no loading here
    settings = job.settings
    with _generation_lock:
        history = list(job.context)
        pinned = sum(clip.is_prompt for clip in history)  # the prompts lead the context
        for index, line in enumerate(job.lines):
            seed = job.seed + index
            started = time.perf_counter()
            chunks = []
            stream = generator.generate_stream(
                line.text,
                line.speaker,
                [clip.segment for clip in history],
                max_audio_length_ms=settings.max_frames * FRAME_MS,
                temperature=settings.temperature,
                topk=settings.topk,
                seed=seed,
                pinned=pinned,
            )
            try:
                for chunk in stream:
                    chunks.append(chunk.float().numpy())
                    yield Chunk(index, chunks[-1])
            finally:  # a Stop closes this generator mid-turn: free the model for the next request now
                stream.close()
            info = stream.info
            audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
            report = TurnReport(
                index, line.speaker, line.text, seed, info.frames, round(len(audio) / SAMPLE_RATE, 3),
                info.ended_by_model, [history[i].label for i in info.dropped_context],
                round(time.perf_counter() - started, 3), info.reused_prompt_frames, job.voices.get(line.speaker),
            )  # fmt: skip
            yield TurnDone(audio, report)
            if len(audio) >= generator.codec.samples_per_frame:  # an empty turn cannot be context
                segment = Segment(line.speaker, line.text, torch.from_numpy(audio))
                history.append(ContextClip(segment, f"turn {index + 1} of this run"))
