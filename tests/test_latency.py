"""Latency in each turn's report: time to first audio, real-time factor, frames/s and the prompt reused,
measured where the chunks come (studio/jobs.py), on a stand-in generator with known delays."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from csm.generator import GenerationInfo, GenerationStream
from studio import jobs
from studio.inputs import Line, Settings
from studio.jobs import Chunk, Job, TurnDone, TurnStarted
from studio.report import Result
from studio.ui.result import describe_result

PROMPT_S, CHUNK_S, CHUNKS, SAMPLES = 0.2, 0.05, 3, 1920 * 2  # a chunk of two 80 ms frames


class SlowGenerator:
    """Reads its prompt for PROMPT_S, then makes a chunk every CHUNK_S; the first turn makes nothing at all
    when `silent_first` (the model ended it at once)."""

    class codec:
        samples_per_frame = 1920

    def __init__(self, silent_first=False):
        self.silent_first, self.turns = silent_first, 0

    def generate_stream(self, text, speaker, context, **options):
        info = GenerationInfo(seed=options["seed"], prompt_frames=40 + 10 * len(context))
        self.turns += 1
        count = 0 if self.silent_first and self.turns == 1 else CHUNKS

        def chunks():
            time.sleep(PROMPT_S)
            info.reused_prompt_frames = 30 if context else 0
            for i in range(count):
                if i:
                    time.sleep(CHUNK_S)
                info.takes[0].frames += 2
                yield torch.full((SAMPLES,), 0.1)

        return GenerationStream(chunks(), info)


def run(monkeypatch, generator, lines, waited_s):
    monkeypatch.setattr(jobs, "load_csm_1b", lambda **key: generator)
    monkeypatch.setattr(jobs, "_last_session", [None])  # no request before this one
    job = Job({}, lines, [], Settings(max_seconds=1, seed=1), 1, session="me")
    job.requested_at = time.perf_counter() - waited_s  # as if the click came `waited_s` ago
    return list(jobs.generate_lines(job))


def test_first_audio_is_timed_from_the_request_and_from_the_turn(monkeypatch):
    events = run(monkeypatch, SlowGenerator(), [Line(0, "One."), Line(1, "Two.")], waited_s=0.5)
    started = [e.report for e in events if isinstance(e, TurnStarted)]
    done = [e.report for e in events if isinstance(e, TurnDone)]
    for s, d in zip(started, done):  # what the first chunk's report says is what the finished turn says
        assert (s.first_audio_from_request_s, s.first_audio_from_turn_s) == (
            d.first_audio_from_request_s,
            d.first_audio_from_turn_s,
        )
    first, second = done
    assert PROMPT_S <= first.first_audio_from_turn_s < PROMPT_S + 0.15
    assert first.first_audio_from_request_s >= 0.5 + PROMPT_S  # the wait before the turn counts
    # The second turn's first audio comes after the whole first turn, counted from the request.
    assert second.first_audio_from_request_s >= 0.5 + first.generation_s + second.first_audio_from_turn_s - 0.01
    assert second.first_audio_from_turn_s <= second.generation_s
    for t in done:
        assert t.seconds == CHUNKS * SAMPLES / 24_000 and t.frames == 2 * CHUNKS
        assert PROMPT_S + (CHUNKS - 1) * CHUNK_S <= t.generation_s < PROMPT_S + CHUNKS * CHUNK_S + 0.2
        assert t.real_time_factor == round(t.generation_s / t.seconds, 3)
        assert t.frames_per_s == round(t.frames / t.generation_s, 1)
    assert (first.prompt_frames, second.prompt_frames) == (40, 50)  # the second turn hears the first
    # The first turn's reuse is not reported: nothing says that the model's cache held this user's prompt.
    assert (first.reused_context_frames, second.reused_context_frames) == (0, 30)


def test_a_turn_without_audio_has_no_first_audio_and_no_speed(monkeypatch):
    events = run(monkeypatch, SlowGenerator(silent_first=True), [Line(0, "One.")], waited_s=0)
    (done,) = [e.report for e in events if isinstance(e, TurnDone)]
    assert done.frames == 0 and done.generation_s >= PROMPT_S
    assert done.first_audio_from_request_s is done.first_audio_from_turn_s is done.real_time_factor is None
    assert done.frames_per_s == 0.0


@pytest.mark.parametrize("lines", [1, 2])
def test_the_result_panel_says_each_turns_latency(monkeypatch, lines):
    events = run(monkeypatch, SlowGenerator(), [Line(i % 2, "Words.") for i in range(lines)], waited_s=0.5)
    turns = [e.report for e in events if isinstance(e, TurnDone)]
    result = Result(None, [], turns, lines, 1, sum(t.seconds for t in turns), 1.0, [])
    text = describe_result(result, "tiny")
    for t in turns:
        assert (
            f"{t.first_audio_from_request_s:.2f}&nbsp;s" in text and f"{t.first_audio_from_turn_s:.2f}&nbsp;s" in text
        )
        assert f"RTF {t.real_time_factor:.2f} · {t.frames_per_s:.1f} frames/s" in text
        assert f"{t.reused_context_frames} of {t.prompt_frames} frames" in text
    assert "First audio: from the click to the turn's first sound" in text and "RTF: seconds taken per" in text


def test_a_turn_cut_short_by_stop_is_timed_from_its_own_start(monkeypatch):
    """Stop during turn 2 keeps its first chunk: its time and speed are its own, not the request's."""
    from studio.service import Studio

    monkeypatch.setattr(jobs, "load_csm_1b", lambda **key: SlowGenerator())
    job = Job({}, [Line(0, "One."), Line(1, "Two.")], [], Settings(max_seconds=1, seed=1), 1)
    stop, events = threading.Event(), []
    for event in Studio("tiny").run(job, stop=stop):
        events.append(event)
        if isinstance(event, Chunk) and event.turn == 1:
            stop.set()
    first, partial = events[-1].turns
    assert partial.stopped and partial.seconds == SAMPLES / 24_000
    assert PROMPT_S <= partial.generation_s < PROMPT_S + 0.1 < first.generation_s
    assert partial.real_time_factor == round(partial.generation_s / partial.seconds, 3)
    assert partial.first_audio_from_turn_s <= partial.generation_s
