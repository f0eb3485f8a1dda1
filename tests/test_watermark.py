"""The watermark: every output path passes through it, --no-watermark turns it off, the detector checks clips."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch

from csm.generator import FIRST_CHUNK_FRAMES
from studio import inputs
from studio.cli import option_parser, watermark_message
from studio.inputs import Settings
from studio.jobs import Chunk, TurnDone, marked_like_a_stream
from studio.service import TINY_MODEL, Studio
from studio.watermark import DEFAULT_MESSAGE, bits_message, load_watermarker, message_bits
from tests.conftest import ROOT

RATE = 24_000


@pytest.fixture(scope="module")
def tiny_marker():
    return load_watermarker(tiny=True)


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    return (
        0.2 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.02 * rng.standard_normal(len(t))
    ).astype(np.float32)


def test_a_message_is_16_bits_most_significant_first():
    assert message_bits(0x8001).tolist() == [1] + [0] * 14 + [1]
    assert bits_message(message_bits(DEFAULT_MESSAGE)) == DEFAULT_MESSAGE


def test_marking_keeps_the_length_changes_little_and_is_the_same_every_time(tiny_marker):
    audio = speech_like(1.3)
    marked = tiny_marker.mark(audio)
    assert marked.dtype == np.float32 and len(marked) == len(audio)
    difference = np.abs(marked - audio)
    assert 0 < difference.max() < 0.05  # a mark, not a new sound
    np.testing.assert_array_equal(tiny_marker.mark(audio), marked)
    assert tiny_marker.detect(marked, RATE).verdict in ("made by this app", "another message", "none found")


@pytest.fixture(scope="module")
def studio():
    return Studio(TINY_MODEL, device="cpu").load()


def run(studio, script="[0] One.\n[1] Two."):
    job = studio.build_job(inputs.parse_script(script), [], [], Settings(max_seconds=1.5, topk=1, seed=9))
    return job, list(studio.run(job))


def test_every_output_path_is_the_watermarker_applied_to_the_raw_chunks(studio, tiny_marker):
    assert studio.watermark_key == {"tiny": True, "message": DEFAULT_MESSAGE, "device": "cpu"}
    job, events = run(studio)
    # The generator's own chunks for turn 1, unmarked:
    stream = studio.generator.generate_stream("One.", 0, [], max_audio_length_ms=1500, topk=1, seed=9)
    raw = [chunk.float().numpy() for chunk in stream]
    streamed = [e.audio for e in events if isinstance(e, Chunk) and e.turn == 0]
    assert len(streamed) == len(raw)
    for got, chunk in zip(streamed, raw):  # streamed chunk by chunk, each marked as it came
        np.testing.assert_array_equal(got, tiny_marker.mark(chunk))
    done = [e for e in events if isinstance(e, TurnDone)]
    np.testing.assert_array_equal(done[0].audio, np.concatenate(streamed))  # the streamed chunks are the turn
    result = events[-1]
    wav, _ = sf.read(result.turn_paths[0], dtype="float32")
    np.testing.assert_allclose(wav, np.clip(done[0].audio, -1, 1), atol=1 / 32768)  # and its WAV
    conversation, _ = sf.read(result.audio_path, dtype="float32")
    np.testing.assert_allclose(conversation[: len(wav)], wav, atol=1 / 32768)  # and the stitched one


@pytest.mark.parametrize("first_chunk_frames", [FIRST_CHUNK_FRAMES, 2])
def test_every_take_is_marked_in_the_streamed_takes_chunks(studio, tiny_marker, first_chunk_frames):
    job = studio.build_job(inputs.parse_script("[0] One."), [], [], Settings(max_seconds=1.5, topk=1, seed=9), takes=2)
    job = replace(job, first_chunk_frames=first_chunk_frames)
    events = list(studio.run(job))
    streamed = [e.audio for e in events if isinstance(e, Chunk)]
    assert len(streamed[0]) == first_chunk_frames * 1_920  # take A streamed in the job's chunks
    done = next(e for e in events if isinstance(e, TurnDone))
    # Top-k 1: take B's frames and raw audio are take A's, so marked like a stream it is A's streamed bytes.
    [take_b] = done.other_takes
    np.testing.assert_array_equal(take_b, np.concatenate(streamed))
    raw = studio.generator.last_generation.takes[1].audio
    other_plan = 3 - first_chunk_frames  # 1 <-> 2: the chunks matter to the bytes
    assert not np.array_equal(marked_like_a_stream(raw, tiny_marker, 1_920, other_plan), take_b)


def test_no_watermark_leaves_the_raw_audio(studio):
    plain = Studio(TINY_MODEL, device="cpu", watermark=False).load()
    assert plain.watermark_key is None and plain.can_generate
    assert "watermark is off" in plain.banner()[0]
    job, events = run(plain, "[0] One.")
    stream = plain.generator.generate_stream("One.", 0, [], max_audio_length_ms=1500, topk=1, seed=9)
    raw = np.concatenate([chunk.float().numpy() for chunk in stream])
    done = next(e for e in events if isinstance(e, TurnDone))
    np.testing.assert_array_equal(done.audio, raw)


def test_without_the_watermark_model_generation_is_off_and_says_how_to_fix_it(monkeypatch):
    def offline(**kwargs):
        raise OSError("facebook/audioseal is not in the cache and the Hub cannot be reached")

    import studio.service as service

    monkeypatch.setattr(service, "load_watermarker", offline)
    blocked = Studio(TINY_MODEL, device="cpu").load()
    assert not blocked.can_generate
    text, kind = blocked.banner()
    assert kind == "error" and "watermark model could not be loaded" in text and "--no-watermark" in text
    with pytest.raises(inputs.InputError, match="Generation is off: the watermark model could not be loaded"):
        blocked.require_generator()


def test_the_message_and_the_switch_come_from_options_and_the_environment(monkeypatch):
    assert watermark_message("0xC5A1") == watermark_message("50593") == 0xC5A1
    for bad in ("65536", "-1", "hello"):
        with pytest.raises(Exception):
            watermark_message(bad)
    assert not option_parser().parse_args([]).no_watermark
    monkeypatch.setenv("CSM_STUDIO_NO_WATERMARK", "1")
    monkeypatch.setenv("CSM_STUDIO_WATERMARK_MESSAGE", "0x1234")
    args = option_parser().parse_args([])
    assert args.no_watermark and args.watermark_message == 0x1234  # argparse converts a string default too


def real_watermarker():
    """AudioSeal's trained models, where facebook/audioseal is in the cache or can be fetched."""
    from csm.hub import HubFileError, download
    from studio.watermark import AUDIOSEAL_REPO

    try:
        download(AUDIOSEAL_REPO, "generator_base.pth")
        download(AUDIOSEAL_REPO, "detector_base.pth")
    except HubFileError as e:  # these build machines have no Hub access
        pytest.skip(f"AudioSeal's weights ({AUDIOSEAL_REPO}) are not cached and cannot be fetched: {e.why}")
    return load_watermarker(tiny=False, message=0xBEEF)  # from here on, any failure fails the test


def test_real_audioseal_marks_and_finds_its_message():
    marker = real_watermarker()
    clip, rate = sf.read(ROOT / "examples" / "river.wav", dtype="float32")
    sizes = [FIRST_CHUNK_FRAMES * 1_920] + [15_360] * (len(clip) // 15_360 + 1)  # the app's chunks: 1 frame, then 8
    starts = np.cumsum([0] + sizes)
    marked = np.concatenate([marker.mark(clip[a:b], rate) for a, b in zip(starts, starts[1:]) if a < len(clip)])
    assert len(marked) == len(clip)
    found = marker.detect(marked, rate)
    assert found.probability > 0.9 and found.message == 0xBEEF and found.verdict == "made by this app"
    assert marker.detect(clip, rate).verdict == "none found"


class StubDetector(torch.nn.Module):
    """Says what it is told: a detection probability and 16 message bits."""

    def __init__(self, probability: float, message: int):
        super().__init__()
        self.probability, self.bits = probability, message_bits(message)

    def detect_watermark(self, x):
        return torch.tensor([self.probability]), self.bits[None]


@pytest.mark.parametrize(
    "probability, message, verdict, shown",
    [
        (0.97, DEFAULT_MESSAGE, "made by this app", "Made by this app"),
        (0.97, 0x1234, "another message", "A watermark with another message"),
        (0.2, DEFAULT_MESSAGE, "none found", "No watermark found"),
    ],
)
def test_a_check_says_whose_watermark_it_found(tiny_marker, probability, message, verdict, shown):
    from studio.ui.check import describe_detection
    from studio.watermark import Watermarker

    marker = Watermarker(tiny_marker.generator, StubDetector(probability, message), DEFAULT_MESSAGE, "stub")
    found = marker.detect(speech_like(1.0), RATE)
    assert found.verdict == verdict and found.probability == pytest.approx(probability)
    assert found.message == (None if verdict == "none found" else message)
    assert shown in describe_detection(found, DEFAULT_MESSAGE)
