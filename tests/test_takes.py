"""Several takes of one turn in one pass, on the offline tiny model: one prefill, one KV-cache row per take."""

import math

import pytest
import torch

from csm.generator import CHUNK_FRAMES, FIRST_CHUNK_FRAMES, MAX_TAKES, Segment, load_csm_1b
from csm.quantize import has_dynamic_int8_kernel
from csm.tiny import tiny_checkpoint_dir

needs_dynamic_int8 = pytest.mark.skipif(not has_dynamic_int8_kernel(), reason="int8-dynamic needs AVX-512 VNNI")
SPF = 1920  # samples per 80 ms frame at 24 kHz
TURN = dict(text="Which take is best?", speaker=1, max_audio_length_ms=2400)  # at most 30 frames


@pytest.fixture(scope="module")
def generator():
    return load_csm_1b(device="cpu", repo_id=str(tiny_checkpoint_dir()))


def context(n: int = 2, seconds: float = 1.0) -> list[Segment]:
    t = torch.arange(int(seconds * 24_000)) / 24_000
    return [Segment(i % 2, f"turn number {i}", 0.3 * torch.sin(2 * math.pi * (200 + 50 * i) * t)) for i in range(n)]


class EndTakesAt:
    """Wraps the decode step so that take `row` emits the all-zero frame (the model's end) at frame `ends[row]`."""

    def __init__(self, step, ends: dict[int, int]):
        self.step, self.ends, self.calls = step, ends, 0

    def __getattr__(self, name):  # prepare, forget_graphs: the real step's
        return getattr(self.step, name)

    def __call__(self, frame, position, temperature, topk):
        out = self.step(frame, position, temperature, topk)
        self.calls += 1  # the prefill gives frame 0, call c gives frame c
        for row, at in self.ends.items():
            if self.calls == at:
                out[row] = 0
        return out


def run(generator, **kwargs):
    stream = generator.generate_stream(**(TURN | kwargs))
    return torch.cat(list(stream)), stream.info


def test_greedy_takes_each_equal_the_single_take(generator, attention):
    kwargs = dict(context=context(), topk=1, seed=0)
    single, info = run(generator, **kwargs)
    streamed, batched = run(generator, takes=MAX_TAKES, **kwargs)
    assert info.frames > 2 * CHUNK_FRAMES and len(batched.takes) == MAX_TAKES
    assert torch.equal(streamed, single)  # take 0 streams as a single take does
    for take in batched.takes:
        assert torch.equal(take.codes, info.codes) and torch.equal(take.audio, single)
        assert take.frames == info.frames and take.ended_by_model == info.ended_by_model


def test_int8_weights_give_greedy_takes_equal_to_the_single_take_too():
    generator = load_csm_1b(device="cpu", repo_id=str(tiny_checkpoint_dir()), quantize="int8")
    single, info = run(generator, context=context(1), topk=1, seed=0)
    _, batched = run(generator, context=context(1), topk=1, seed=0, takes=3)
    assert info.frames > CHUNK_FRAMES and all(torch.equal(take.codes, info.codes) for take in batched.takes)


def test_sampled_takes_differ_and_the_same_seed_gives_the_same_takes(generator):
    kwargs = dict(context=context(1), seed=5, takes=3)
    first = generator.generate_takes(**(TURN | kwargs))
    codes = [take.codes for take in generator.last_generation.takes]
    again = generator.generate_takes(**(TURN | kwargs))
    other_seed = generator.generate_takes(**(TURN | kwargs | dict(seed=6)))
    assert len(first) == 3 and all(torch.equal(a, b) for a, b in zip(first, again))
    assert all(not torch.equal(codes[i], codes[j]) for i in range(3) for j in range(i))
    assert all(not torch.equal(a[: 2 * SPF], b[: 2 * SPF]) for a, b in zip(first, other_seed))


def test_take_zero_streams_in_chunks_and_every_take_has_its_whole_audio(generator):
    stream = generator.generate_stream(**TURN, context=context(), seed=2, takes=3)
    chunks = list(stream)
    sizes = [chunk.numel() // SPF for chunk in chunks]
    takes = stream.info.takes
    assert sizes[0] == FIRST_CHUNK_FRAMES and all(size == CHUNK_FRAMES for size in sizes[1:-1])
    assert sum(sizes) == takes[0].frames == stream.info.frames
    assert torch.equal(torch.cat(chunks), takes[0].audio)
    for take in takes:
        assert take.audio.numel() == take.frames * SPF and take.codes.shape[1] == take.frames
        assert (take.audio - generator.codec.decode(take.codes)).abs().max() < 1e-4


@pytest.mark.parametrize("quantize", [None, pytest.param("int8-dynamic", marks=needs_dynamic_int8)])
@pytest.mark.parametrize("row", [0, 2])
def test_a_take_that_ends_early_stops_at_its_zero_frame_and_the_others_go_on(monkeypatch, row, quantize):
    """Rows are independent, with int8-dynamic too (whose activations are quantized per row, csm.quantize)."""
    generator = load_csm_1b(device="cpu", repo_id=str(tiny_checkpoint_dir()), quantize=quantize)
    kwargs = dict(context=context(1), seed=4, takes=3)
    _, reference = run(generator, **kwargs)
    monkeypatch.setattr(generator, "frame_step", EndTakesAt(generator.frame_step, {row: 5}))
    streamed, info = run(generator, **kwargs)
    ended, expected = info.takes[row], reference.takes[row]
    assert ended.ended_by_model and ended.frames == 5 and ended.audio.numel() == 5 * SPF
    assert torch.equal(ended.codes, expected.codes[:, :5])
    assert (ended.audio - expected.audio[: 5 * SPF]).abs().max() < 1e-4  # cut into other chunks
    for take, same in zip(info.takes, reference.takes):
        if take is not ended:  # rows are independent: the others are exactly as without the end
            assert same.frames > 5 and torch.equal(take.codes, same.codes) and torch.equal(take.audio, same.audio)
    assert torch.equal(streamed, info.takes[0].audio)


def test_the_pass_ends_in_the_chunk_where_the_last_take_ends(generator, monkeypatch):
    step = EndTakesAt(generator.frame_step, {0: 3, 1: 12})
    monkeypatch.setattr(generator, "frame_step", step)
    _, info = run(generator, context=context(1), seed=1, takes=2)
    assert [(t.frames, t.ended_by_model) for t in info.takes] == [(3, True), (12, True)]
    # Frame 12 is in the third chunk (frames 9 to 16, after chunks of 1 and 8): no frame after it is computed.
    assert step.calls == FIRST_CHUNK_FRAMES + 2 * CHUNK_FRAMES - 1


def test_the_prompt_is_prefilled_once_at_batch_one(generator):
    shapes = []  # (batch, frames) of every backbone call
    hook = generator.model.backbone.register_forward_pre_hook(lambda _, args: shapes.append(args[0].shape[:2]))
    generator.model.reset_caches()  # cold: every part of the prompt is prefilled
    try:
        _, info = run(generator, context=context(2), seed=1, takes=3)
    finally:
        hook.remove()
    prefill, steps = shapes[:3], shapes[3:]  # two context clips and the text, then one call per frame
    assert all(batch == 1 for batch, _ in prefill) and sum(frames for _, frames in prefill) == info.prompt_frames
    assert all(shape == (3, 1) for shape in steps) and len(steps) == max(t.frames for t in info.takes) - 1


def test_a_single_take_after_a_batched_pass_reuses_the_cache_and_equals_a_cold_one(generator, attention):
    segments = context(2)
    generator.model.reset_caches()
    cold, _ = run(generator, context=segments, seed=3)
    run(generator, context=segments, seed=9, takes=4)
    _, batched = run(generator, context=segments, seed=9, takes=2)  # the takes' rows exist now: reuse
    warm, info = run(generator, context=segments, seed=3)
    held = sum(generator.segment_frames(s) for s in segments)
    assert batched.reused_prompt_frames == held and info.reused_prompt_frames == held
    assert torch.equal(warm, cold)


@pytest.mark.parametrize("takes", [0, -1, MAX_TAKES + 1, 1.5, "2", True, None])
def test_takes_out_of_range_is_a_clear_value_error(generator, takes):
    with pytest.raises(ValueError, match=rf"takes .* an integer from 1 to {MAX_TAKES}, got"):
        generator.generate_stream(**TURN, context=[], takes=takes)
    with pytest.raises(ValueError, match=rf"takes .* an integer from 1 to {MAX_TAKES}, got"):
        generator.generate_takes(**TURN, context=[], takes=takes)
