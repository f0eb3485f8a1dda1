"""The context meter says what the generator then does: the same prompt frames, the same turns left out."""

from __future__ import annotations

import pytest
import torch

from csm.generator import Segment
from studio import jobs
from studio.inputs import SAMPLE_RATE, Line, Settings
from studio.meter import describe_meter, measure
from studio.service import TINY_MODEL, Studio


@pytest.fixture(scope="module")
def studio():
    return Studio(TINY_MODEL, device="cpu", watermark=False).load()


def clip(seconds: float, label: str, is_prompt=False, speaker=0) -> jobs.ContextClip:
    audio = 0.1 * torch.ones(int(seconds * SAMPLE_RATE))
    return jobs.ContextClip(Segment(speaker, "Some words here.", audio), label, is_prompt)


@pytest.mark.parametrize("turn_seconds, dropped", [(6, []), (20, ["turn 1"])])
def test_the_meter_counts_what_the_generator_then_reports(studio, turn_seconds, dropped):
    voices = [clip(5, "voice 0", True), clip(4, "voice 1", True, speaker=1)]
    turns = [clip(turn_seconds, f"turn {i}") for i in range(1, 9)]  # 8 x 20 s + the voices overflow 164 s
    settings = Settings(max_seconds=2, seed=5)
    job = jobs.Job(studio.model_key, [Line(1, "Hello there, how are you?")], voices + turns, settings, seed=5)
    meter = measure(job, studio.generator)
    *_, done = jobs.generate_lines(job)

    assert meter.dropped == done.report.dropped_context == dropped
    assert meter.prompt_frames == done.report.prompt_frames
    frames = studio.generator.segment_frames
    kept = [t for t in turns if t.label not in dropped]
    assert (meter.voices, meter.conversation) == (sum(frames(v.segment) for v in voices),
                                                  sum(frames(t.segment) for t in kept))  # fmt: skip
    assert meter.text == done.report.prompt_frames - meter.voices - meter.conversation > 0
    assert meter.reply == 25 and meter.window == 2048 and meter.free == 2048 - meter.prompt_frames - 25
    shown = describe_meter(meter)
    assert f"voices {meter.voices}" in shown and f"free {max(meter.free, 0)} of 2048 frames" in shown
    assert ("left out: turn 1 (" in shown) == bool(dropped)


def test_a_script_is_measured_for_its_first_turn_and_says_so(studio):
    job = jobs.Job(studio.model_key, [Line(0, "One."), Line(1, "Two, a longer one.")], [], Settings(), seed=1)
    meter = measure(job, studio.generator)
    plan = studio.generator.plan_context("One.", 0, [], Settings().max_frames * 80)
    assert meter.prompt_frames == plan.prompt_frames and meter.turns == 2
    assert "For the first of 2 turns" in describe_meter(meter)
