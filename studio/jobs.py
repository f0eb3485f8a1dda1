"""One request's turns, generated in order on the device: the only code that needs the GPU."""

from __future__ import annotations

# isort: off
import spaces  # first: on ZeroGPU it must patch torch before anything touches CUDA
# isort: on

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from csm.generator import FRAME_MS, Segment, load_csm_1b
from studio.errors import user_facing_errors
from studio.inputs import MAX_REQUEST_SECONDS, SAMPLE_RATE, Line, Settings
from studio.watermark import load_watermarker

# ZeroGPU time asked for per request: start-up (CUDA graph capture, prefill) plus a generous
# rate per second of requested audio; the model usually stops well before the limit. A request asks
# for at most MAX_REQUEST_SECONDS of audio, so this is also the most one request can hold the GPU.
GPU_BASE_S = 10
GPU_S_PER_AUDIO_S = 1.0
GPU_MAX_S = int(GPU_BASE_S + GPU_S_PER_AUDIO_S * MAX_REQUEST_SECONDS)


@dataclass
class ContextClip:
    segment: Segment
    label: str  # how messages name it, e.g. "speaker 0's voice (Maple)" or "context turn 2"
    is_prompt: bool = False  # a speaker prompt: left out of a full window only when nothing else is left
    automatic: bool = False  # its transcript was made by the speech recogniser
    problems: list[str] = field(default_factory=list)  # what its clean-up found wrong (clipping), for the report


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
    session: str | None = None  # whose request it is: reuse of another user's prompt is not reported
    watermark: dict | None = None  # load_watermarker's arguments; None: --no-watermark


@dataclass
class TurnReport:
    index: int
    speaker: int
    text: str
    seed: int
    frames: int = 0
    seconds: float = 0.0
    ended_by_model: bool = False
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
class TurnStarted:
    """Sent with a turn's first chunk, once its prompt is fitted: what a report of it so far says."""

    report: TurnReport


@dataclass
class TurnDone:
    audio: np.ndarray
    report: TurnReport


def finished_report(report: TurnReport, audio: np.ndarray, started: float, **changes) -> TurnReport:
    """The report of a turn whose audio is `audio`: its length, and the time it took since `started`."""
    frames = len(audio) * 1000 // (SAMPLE_RATE * FRAME_MS)
    seconds, elapsed = round(len(audio) / SAMPLE_RATE, 3), round(time.perf_counter() - started, 3)
    return replace(report, **{"frames": frames, "seconds": seconds, "generation_s": elapsed, **changes})


def with_context(report: TurnReport, info, history: list[ContextClip], hide_reuse: bool) -> TurnReport:
    """The report with what fitting the prompt did: the context left out, and the context reused."""
    dropped = [history[i].label for i in info.dropped_context]
    reused = 0 if hide_reuse else info.reused_prompt_frames
    return replace(report, dropped_context=dropped, reused_context_frames=reused)


def gpu_seconds(job: Job) -> int:
    """The ZeroGPU duration for a job (spaces.GPU calls it with the job)."""
    return int(min(GPU_MAX_S, GPU_BASE_S + GPU_S_PER_AUDIO_S * job.settings.max_seconds * len(job.lines)))


_generation_lock = threading.Lock()  # one job at a time: a script's turns run back to back
_last_session: list[str | None] = [None]  # whose job held the model last (read and written under the lock)
ONE_AT_A_TIME = {"concurrency_limit": 1, "concurrency_id": "generation"}  # the events that run jobs: one per GPU
# The events that read a user's clip outside a job (a note on upload, adding a turn, a watermark check):
# each may decode a few minutes of audio, so only this many at once.
CLIP_WORK = {"concurrency_limit": 2, "concurrency_id": "clips"}


@spaces.GPU(duration=gpu_seconds)
def run_job(job: Job) -> Iterator[Chunk | TurnStarted | TurnDone]:
    """Generate the job's lines in order, yielding audio chunks as they come and a TurnDone per line."""
    # On ZeroGPU this runs in a worker process, from which only a gr.Error brings its message back.
    with user_facing_errors():
        yield from generate_lines(job)


def generate_lines(job: Job) -> Iterator[Chunk | TurnStarted | TurnDone]:
    generator = load_csm_1b(**job.model_key)  # cached: no loading here
    marker = load_watermarker(**job.watermark) if job.watermark is not None else None
    settings = job.settings
    with _generation_lock:
        # The KV the first turn reuses was left by the job before: reported only if that was this
        # user's own, as the amount would tell one user about another's prompt.
        # Until this job's first prompt is in the cache, nobody is sure to own what it holds.
        previous, _last_session[0] = _last_session[0], None
        private = job.session is None or previous != job.session
        history = list(job.context)
        pinned = sum(clip.is_prompt for clip in history)  # the prompts lead the context
        for index, line in enumerate(job.lines):
            report = TurnReport(index, line.speaker, line.text, job.seed + index, voice=job.voices.get(line.speaker))
            started, chunks = time.perf_counter(), []
            stream = generator.generate_stream(
                line.text,
                line.speaker,
                [clip.segment for clip in history],
                max_audio_length_ms=settings.max_frames * FRAME_MS,
                temperature=settings.temperature,
                topk=settings.topk,
                seed=report.seed,
                pinned=pinned,
            )
            try:
                for chunk in stream:
                    if not chunks:  # the prompt is fitted by now: what it left out is known
                        report = with_context(report, stream.info, history, hide_reuse=private and index == 0)
                        _last_session[0] = job.session  # the cache now holds this job's prompt
                        yield TurnStarted(report)
                    chunks.append(chunk.float().numpy() if marker is None else marker.mark(chunk.float().numpy()))
                    yield Chunk(index, chunks[-1])
            finally:  # a Stop closes this generator mid-turn: free the model for the next request now
                stream.close()
            audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
            info = stream.info
            report = with_context(report, info, history, hide_reuse=private and index == 0)
            report = finished_report(report, audio, started, frames=info.frames,
                                     ended_by_model=info.ended_by_model)  # fmt: skip
            yield TurnDone(audio, report)
            if len(audio) >= generator.codec.samples_per_frame:  # an empty turn cannot be context
                segment = Segment(line.speaker, line.text, torch.from_numpy(audio))
                history.append(ContextClip(segment, f"turn {index + 1} of this run"))
