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

from csm.generator import CHUNK_FRAMES, FIRST_CHUNK_FRAMES, FRAME_MS, Segment, load_csm_1b
from studio.errors import user_facing_errors
from studio.inputs import MAX_REQUEST_SECONDS, SAMPLE_RATE, Line, Settings
from studio.watermark import load_watermarker

# ZeroGPU time asked for per request: start-up (CUDA graph capture, prefill) plus a generous
# rate per second of requested audio; the model usually stops well before the limit. A request asks
# for at most MAX_REQUEST_SECONDS of audio, so this is also the most one request can hold the GPU.
GPU_BASE_S = 10
GPU_S_PER_AUDIO_S = 1.0
GPU_MAX_S = int(GPU_BASE_S + GPU_S_PER_AUDIO_S * MAX_REQUEST_SECONDS)


TAKE_LABELS = "ABCD"


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
    # time.perf_counter() at the click or the request's start (the handler sets it; by default, when the job
    # was made): first audio is measured from it. On Linux perf_counter is system-wide, so a ZeroGPU worker
    # process reads the same clock.
    requested_at: float = field(default_factory=time.perf_counter)
    takes: int = 1  # versions of each turn, made in one pass; take A (0) streams and continues the conversation
    first_turn: int = 0  # the index of the job's first line in its script: a redo of turn k starts at k
    # Frames in each turn's first streamed chunk. The watermark is applied per chunk, so the marked audio
    # depends on it: a reproduction uses the bundle's (older bundles were made with 2).
    first_chunk_frames: int = FIRST_CHUNK_FRAMES


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
    prompt_frames: int = 0  # the prompt the model read before the turn's first frame: context and the turn's text
    first_audio_from_request_s: float | None = None  # the click or request's start -> this turn's first chunk
    first_audio_from_turn_s: float | None = None  # this turn's start (before its prompt is read) -> its first chunk
    real_time_factor: float | None = None  # generation_s / seconds: below 1 is faster than real time
    frames_per_s: float | None = None  # frames / generation_s, prompt reading included
    takes: list[dict] = field(default_factory=list)  # with several takes: each one's frames, seconds, end


@dataclass
class Chunk:
    turn: int
    audio: np.ndarray  # float32 at SAMPLE_RATE


@dataclass
class TurnStarted:
    """Sent with a turn's first chunk, once its prompt is fitted: what a report of it so far says."""

    report: TurnReport
    started: float  # time.perf_counter() at the turn's start: a turn cut short is timed from it


@dataclass
class TurnDone:
    audio: np.ndarray  # take A's
    report: TurnReport
    other_takes: list[np.ndarray] = field(default_factory=list)  # takes B, C, D (watermarked like A)


def finished_report(report: TurnReport, audio: np.ndarray, started: float, **changes) -> TurnReport:
    """The report of a turn whose audio is `audio`: its length, and the time it took since `started`."""
    frames = len(audio) * 1000 // (SAMPLE_RATE * FRAME_MS)
    seconds, elapsed = round(len(audio) / SAMPLE_RATE, 3), round(time.perf_counter() - started, 3)
    done = replace(report, **{"frames": frames, "seconds": seconds, "generation_s": elapsed, **changes})
    return with_speed(done)


def with_speed(report: TurnReport) -> TurnReport:
    """The report's real-time factor and frames/s, from its rounded figures, so that its own numbers give them:
    rtf = generation_s / seconds."""
    rtf = round(report.generation_s / report.seconds, 3) if report.seconds else None
    fps = round(report.frames / report.generation_s, 1) if report.generation_s else None
    return replace(report, real_time_factor=rtf, frames_per_s=fps)


def with_first_audio(report: TurnReport, job: Job, turn_started: float) -> TurnReport:
    """The report of a turn whose first chunk has just come: how long it took, from the request and the turn."""
    now = time.perf_counter()
    return replace(report, first_audio_from_request_s=round(now - job.requested_at, 3),
                   first_audio_from_turn_s=round(now - turn_started, 3))  # fmt: skip


def with_context(report: TurnReport, info, history: list[ContextClip], hide_reuse: bool) -> TurnReport:
    """The report with what fitting the prompt did: the context left out, and the context reused."""
    dropped = [history[i].label for i in info.dropped_context]
    reused = 0 if hide_reuse else info.reused_prompt_frames
    return replace(report, dropped_context=dropped, reused_context_frames=reused, prompt_frames=info.prompt_frames)


def gpu_seconds(job: Job) -> int:
    """The ZeroGPU duration for a job (spaces.GPU calls it with the job)."""
    per_turn = GPU_S_PER_AUDIO_S * job.settings.max_seconds * (1 + 0.3 * (job.takes - 1))  # takes share a pass
    return int(min(GPU_MAX_S, GPU_BASE_S + per_turn * len(job.lines)))


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
    with _generation_lock:
        # The KV the first turn reuses was left by the job before: reported only if that was this
        # user's own, as the amount would tell one user about another's prompt.
        # Until this job's first prompt is in the cache, nobody is sure to own what it holds.
        previous, _last_session[0] = _last_session[0], None
        private = job.session is None or previous != job.session
        history = list(job.context)
        for i, line in enumerate(job.lines):
            done = yield from generate_turn(job, generator, marker, history, i, hide_reuse=private and i == 0)
            if len(done.audio) >= generator.codec.samples_per_frame:  # an empty turn cannot be context
                segment = Segment(line.speaker, line.text, torch.from_numpy(done.audio))
                history.append(ContextClip(segment, f"turn {done.report.index + 1} of this run"))


def generate_turn(job: Job, generator, marker, history: list[ContextClip], i: int, hide_reuse: bool):
    """One line of the job, in the context of `history`: its chunks as they come (take A's), then its TurnDone."""
    line, settings, index = job.lines[i], job.settings, job.first_turn + i
    report = TurnReport(index, line.speaker, line.text, job.seed + i, voice=job.voices.get(line.speaker))
    started, chunks = time.perf_counter(), []
    stream = generator.generate_stream(
        line.text,
        line.speaker,
        [clip.segment for clip in history],
        max_audio_length_ms=settings.max_frames * FRAME_MS,
        temperature=settings.temperature,
        topk=settings.topk,
        seed=report.seed,
        pinned=sum(clip.is_prompt for clip in history),  # the prompts lead the context
        takes=job.takes,
        first_chunk_frames=job.first_chunk_frames,
    )
    try:
        for chunk in stream:
            samples = chunk.float().numpy() if marker is None else marker.mark(chunk.float().numpy())
            if not chunks:  # the prompt is fitted by now: what it left out is known
                report = with_first_audio(report, job, started)  # marked, so ready to be heard
                report = with_context(report, stream.info, history, hide_reuse)
                _last_session[0] = job.session  # the cache now holds this job's prompt
                yield TurnStarted(report, started)
            chunks.append(samples)
            yield Chunk(index, samples)
    finally:  # a Stop closes this generator mid-turn: free the model for the next request now
        stream.close()
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    info = stream.info
    report = with_context(report, info, history, hide_reuse)
    report = finished_report(report, audio, started, frames=info.frames, ended_by_model=info.ended_by_model)
    frame = generator.codec.samples_per_frame
    others = [marked_like_a_stream(take.audio, marker, frame, job.first_chunk_frames) for take in info.takes[1:]]
    if job.takes > 1:
        report = replace(report, takes=take_summaries(info.takes))
    done = TurnDone(audio, report, others)
    yield done
    return done


def marked_like_a_stream(audio, marker, samples_per_frame: int, first_chunk_frames: int) -> np.ndarray:
    """A take's whole audio, watermarked chunk by chunk at the streamed take's chunk sizes (a first chunk of
    `first_chunk_frames`, the job's, then CHUNK_FRAMES): so it is what it would be had it streamed, and any
    take's WAV is the watermarker over the generator's chunks."""
    audio = np.zeros(0, np.float32) if audio is None else audio.float().numpy()
    if marker is None:
        return audio
    bounds = [0, first_chunk_frames * samples_per_frame]
    while bounds[-1] < len(audio):
        bounds.append(bounds[-1] + CHUNK_FRAMES * samples_per_frame)
    pieces = [marker.mark(audio[a:b]) for a, b in zip(bounds, bounds[1:]) if len(audio[a:b])]
    return np.concatenate(pieces) if pieces else audio


def take_summaries(takes) -> list[dict]:
    """Each take's frames, length and end, as reports and the API give them: take A first."""
    return [
        {
            "take": TAKE_LABELS[i],
            "frames": take.frames,
            "seconds": round(take.frames * FRAME_MS / 1000, 3),
            "ended_by_model": take.ended_by_model,
        }  # fmt: skip
        for i, take in enumerate(takes)
    ]
