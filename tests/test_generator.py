"""The generator on the offline tiny model: lengths, seeds, streaming, context fitting, bad input, caching."""

import json
import math
import shutil

import numpy as np
import pytest
import torch

from csm.generator import CHUNK_FRAMES, FIRST_CHUNK_FRAMES, GenerationInfo, Segment, load_csm_1b
from csm.tiny import tiny_checkpoint_dir

SPF = 1920  # samples per 80 ms frame at 24 kHz


@pytest.fixture(scope="module")
def generator():
    return load_csm_1b(device="cpu", repo_id=str(tiny_checkpoint_dir()))


def clip(seconds: float, freq: float = 220.0, rate: int = 24_000) -> torch.Tensor:
    t = torch.arange(int(seconds * rate)) / rate
    return 0.3 * torch.sin(2 * math.pi * freq * t)


def context(n: int = 2, seconds: float = 1.0) -> list[Segment]:
    return [Segment(speaker=i % 2, text=f"turn number {i}", audio=clip(seconds, 200 + 50 * i)) for i in range(n)]


def test_audio_rate_and_length_match_frames(generator):
    audio = generator.generate("Hello there.", 0, context(), max_audio_length_ms=1200, seed=1)
    info = generator.last_generation
    assert generator.sample_rate == 24_000
    assert audio.dim() == 1 and audio.dtype == torch.float32
    assert 0 < info.frames <= 15
    assert audio.numel() == info.frames * SPF
    assert info.codes.shape == (generator.num_codebooks, info.frames)
    assert torch.isfinite(audio).all() and audio.abs().max() > 0


def test_same_seed_same_audio_other_seed_other_audio(generator):
    kwargs = dict(text="Same words.", speaker=1, context=context(1), max_audio_length_ms=800)
    a = generator.generate(**kwargs, seed=7)
    b = generator.generate(**kwargs, seed=7)
    c = generator.generate(**kwargs, seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_seed_is_drawn_and_reported_when_not_given(generator):
    a = generator.generate("Hi.", 0, [], max_audio_length_ms=400)
    seed = generator.last_generation.seed
    assert isinstance(seed, int)
    assert torch.equal(generator.generate("Hi.", 0, [], max_audio_length_ms=400, seed=seed), a)


def test_topk_one_is_deterministic_whatever_the_seed(generator):
    kwargs = dict(text="Greedy.", speaker=0, context=context(1), max_audio_length_ms=640, topk=1)
    assert torch.equal(generator.generate(**kwargs, seed=1), generator.generate(**kwargs, seed=2))


def test_streamed_chunks_equal_one_shot_decode(generator):
    chunks = list(generator.generate_stream("Stream me.", 0, context(), max_audio_length_ms=2000, seed=3))
    info = generator.last_generation
    assert len(chunks) > 2
    # First audio leaves after the first few frames, not at the end.
    assert chunks[0].numel() == min(FIRST_CHUNK_FRAMES, info.frames) * SPF
    streamed = torch.cat(chunks)
    one_shot = generator.codec.decode(info.codes)
    assert streamed.shape == one_shot.shape
    assert (streamed - one_shot).abs().max() < 1e-4


def test_stream_is_lazy_until_iterated(generator):
    stream = generator.generate_stream("Lazy.", 0, [], max_audio_length_ms=400, seed=1)
    first = next(stream)
    assert first.numel() == FIRST_CHUNK_FRAMES * SPF
    stream.close()  # abandoning a stream releases the generator for the next request
    assert generator.generate("Next.", 0, [], max_audio_length_ms=240, seed=1).numel() > 0


def test_the_first_chunk_is_one_frame_and_its_size_changes_when_audio_comes_not_what_is_said(generator):
    kwargs = dict(text="Chunk plans.", speaker=0, context=context(1), max_audio_length_ms=1600, seed=9)
    streams = {size: generator.generate_stream(**kwargs, first_chunk_frames=size) for size in (None, 1, 2)}
    chunks = {size: list(stream) for size, stream in streams.items()}
    frames = streams[1].info.frames
    assert FIRST_CHUNK_FRAMES == 1 and frames > 2 + CHUNK_FRAMES  # long enough for a full chunk after the first
    for size in (1, 2):
        sizes = [chunk.numel() // SPF for chunk in chunks[size]]
        assert sizes[0] == size and all(n == CHUNK_FRAMES for n in sizes[1:-1]) and sum(sizes) == frames
    assert [c.numel() for c in chunks[None]] == [c.numel() for c in chunks[1]]  # None: the default, one frame
    assert torch.equal(streams[1].info.codes, streams[2].info.codes)  # the same frames, bit for bit
    # The same audio, up to float rounding: Mimi's convolutions over other chunk lengths sum in another
    # order, so a sample may differ in its last bits (and a 16-bit WAV in its last step): not bit for bit.
    assert (torch.cat(chunks[1]) - torch.cat(chunks[2])).abs().max() < 1e-4


@pytest.mark.parametrize("size", [0, CHUNK_FRAMES + 1, -1, "2", 1.0, True])
def test_a_bad_first_chunk_size_is_a_clear_value_error(generator, size):
    message = rf"first_chunk_frames .* from 1 to {CHUNK_FRAMES}"
    with pytest.raises(ValueError, match=message):
        generator.generate_stream("Hello.", 0, [], max_audio_length_ms=400, first_chunk_frames=size)
    parts = [generator._target_part(0, "Hello.")]
    with pytest.raises(ValueError, match=message):
        next(generator.stream_parts(parts, 5, 0.9, 50, GenerationInfo(seed=1), first_chunk_frames=size))


def test_each_stream_carries_its_own_info(generator):
    first = generator.generate_stream("One.", 0, [], max_audio_length_ms=400, seed=11)
    second = generator.generate_stream("Two.", 1, context(1), max_audio_length_ms=640, seed=12)
    first_audio, second_audio = torch.cat(list(first)), torch.cat(list(second))
    assert (first.info.seed, second.info.seed) == (11, 12)
    assert first.info.frames * SPF == first_audio.numel() and second.info.frames * SPF == second_audio.numel()
    assert first.info.prompt_frames < second.info.prompt_frames  # the second one has a context clip
    assert generator.last_generation is second.info


def test_streams_from_two_threads_are_served_one_after_the_other(generator):
    import threading

    results = {}

    def run(seed):
        stream = generator.generate_stream("Threads.", 0, [], max_audio_length_ms=800, topk=5, seed=seed)
        results[seed] = (torch.cat(list(stream)), stream.info)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in (21, 22)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for seed, (audio, info) in results.items():
        assert info.seed == seed and info.frames * SPF == audio.numel()
        alone = generator.generate("Threads.", 0, [], max_audio_length_ms=800, topk=5, seed=seed)
        assert torch.equal(alone, audio)  # nothing of the other thread's run leaked in
    assert len(results) == 2


@pytest.mark.parametrize("samples", [SPF, SPF + 1, 2 * SPF, 36_000])
def test_segment_frames_counts_what_the_prompt_holds(generator, samples):
    segment = Segment(1, "how many frames?", clip(samples / 24_000))
    assert segment.audio.numel() == samples
    assert generator.segment_frames(segment) == len(generator._segment_part(segment).tokens)


def test_context_budget_is_the_window_left_after_text_and_reply(generator):
    text_frames = len(generator.tokenizer.encode_segment(0, "Hello there."))
    assert generator.context_budget("Hello there.", 0, 8000) == generator.model.max_seq_len - 100 - text_frames
    with pytest.raises(ValueError, match="shorten the text or the maximum audio length"):
        generator.context_budget("Hello there.", 0, 170_000)


def run_counting_backbone_frames(generator, segments, **kwargs):
    """(audio, info, frames the backbone read): prefill parts plus one frame per decode step."""
    read = []
    hook = generator.model.backbone.register_forward_pre_hook(lambda _, args: read.append(args[0].shape[1]))
    try:
        stream = generator.generate_stream("What did you say?", 1, segments, max_audio_length_ms=800, seed=3, **kwargs)
        audio = torch.cat(list(stream))
    finally:
        hook.remove()
    return audio, stream.info, sum(read)


def test_a_recurring_context_is_not_prefilled_again_and_gives_the_same_audio(generator, attention):
    a, b, c = context(3)
    sizes = {id(s): generator.segment_frames(s) for s in (a, b, c)}
    generator.model.reset_caches()  # whatever ran before: start cold

    cold, info, read = run_counting_backbone_frames(generator, [a, b])
    assert info.reused_prompt_frames == 0 and read == info.prompt_frames + info.frames - 1

    warm, info, read = run_counting_backbone_frames(generator, [a, b])
    assert info.reused_prompt_frames == sizes[id(a)] + sizes[id(b)]
    assert read == info.prompt_frames - info.reused_prompt_frames + info.frames - 1  # only the new text
    assert torch.equal(warm, cold)

    partly, info, _ = run_counting_backbone_frames(generator, [a, c], topk=1)  # the first segment recurs
    assert info.reused_prompt_frames == sizes[id(a)]
    generator.model.reset_caches()  # someone else used the cache: nothing may be reused
    partly_cold, info, _ = run_counting_backbone_frames(generator, [a, c], topk=1)
    assert info.reused_prompt_frames == 0 and torch.equal(partly, partly_cold)

    _, info, _ = run_counting_backbone_frames(generator, [c, a])  # same segments, other positions
    assert info.reused_prompt_frames == 0


def test_an_abandoned_stream_leaves_a_reusable_and_correct_cache(generator, attention):
    a, b = context(2)
    generator.model.reset_caches()
    reference, _, _ = run_counting_backbone_frames(generator, [a, b])
    stream = generator.generate_stream("Something else entirely.", 0, [a, b], max_audio_length_ms=4000, seed=9)
    next(stream)
    stream.close()
    again, info, _ = run_counting_backbone_frames(generator, [a, b])
    assert info.reused_prompt_frames > 0 and torch.equal(again, reference)


@pytest.fixture(scope="module")
def small_window(tmp_path_factory):
    """The tiny model with a 128-frame window, so context overflow is cheap to reach."""
    folder = tmp_path_factory.mktemp("small-window")
    shutil.copytree(tiny_checkpoint_dir(), folder, dirs_exist_ok=True)
    config = json.loads((folder / "config.json").read_text())
    config["max_position_embeddings"] = 128
    (folder / "config.json").write_text(json.dumps(config))
    return load_csm_1b(device="cpu", repo_id=str(folder))


def test_context_overflow_drops_oldest_segments_and_reports_them(small_window):
    segments = context(4, seconds=1.5)  # ~19 audio frames + ~10 text frames each
    audio = small_window.generate("What now?", 1, segments, max_audio_length_ms=3200, seed=0)
    info = small_window.last_generation
    assert info.dropped_context and info.dropped_context == list(range(len(info.dropped_context)))
    assert len(info.dropped_context) < len(segments)
    assert info.prompt_frames + 3200 // 80 <= 128
    assert audio.numel() == info.frames * SPF


@pytest.mark.parametrize("pinned", [0, 2])
def test_plan_context_says_what_generation_then_drops(small_window, pinned, monkeypatch):
    segments = context(4, seconds=1.5)
    kwargs = dict(text="What now?", speaker=1, context=segments, max_audio_length_ms=3200, pinned=pinned)
    with monkeypatch.context() as patch:  # planning counts frames: it never runs the codec
        patch.setattr(small_window.codec, "encode", lambda *a: pytest.fail("plan_context ran the codec"))
        plan = small_window.plan_context(**kwargs)
    stream = small_window.generate_stream(**kwargs, seed=0)
    list(stream)
    assert plan.dropped and plan.dropped == stream.info.dropped_context
    assert plan.prompt_frames == stream.info.prompt_frames
    # Speaker prompts (the first `pinned`) stay; the conversation's oldest turns go first.
    assert plan.dropped[0] == pinned and not set(plan.dropped) & set(range(pinned))


def test_fit_context_drops_pinned_segments_last(generator):
    # A 100-frame budget: the window minus 10 text frames and the longest reply.
    target, max_frames = 10, generator.model.max_seq_len - 110

    def fit(frames, pinned):
        return generator.fit_context(target, frames, max_frames, pinned=pinned)

    five = [30] * 5  # 150 frames: two of them must go
    assert fit(five, pinned=0) == [0, 1]
    assert fit(five, pinned=2) == [2, 3]
    assert fit(five, pinned=4) == [0, 4]  # ascending, though 4 went first
    assert fit(five, pinned=5) == [0, 1]  # all pinned: oldest first again
    assert fit([60, 50, 20, 20], pinned=2) == [0, 2, 3]  # only once every later one has gone does a prompt go
    assert fit([80, 20, 30], pinned=1) == [1, 2]
    assert fit([50, 50], pinned=1) == []  # it fits: nothing goes
    assert generator.fit_context(target, five, max_frames) == fit(five, pinned=0)  # the default keeps the old policy


@pytest.mark.parametrize("pinned", [-1, 3, True, 1.5, "1", None])
def test_bad_pinned_is_a_clear_value_error(generator, pinned):
    with pytest.raises(ValueError, match=r"pinned .* from 0 to 2"):
        generator.fit_context(10, [5, 5], 100, pinned=pinned)
    with pytest.raises(ValueError, match=r"pinned .* from 0 to 2"):
        generator.generate_stream("Hi.", 0, context(2), max_audio_length_ms=400, pinned=pinned)
    with pytest.raises(ValueError, match=r"pinned .* from 0 to 2"):
        generator.plan_context("Hi.", 0, context(2), max_audio_length_ms=400, pinned=pinned)


def test_everything_fits_nothing_dropped(small_window):
    small_window.generate("Short.", 0, context(1), max_audio_length_ms=800, seed=0)
    assert small_window.last_generation.dropped_context == []


def test_target_text_that_cannot_fit_raises(small_window):
    with pytest.raises(ValueError, match="exceeds the model's 128-frame window"):
        small_window.generate("word " * 100, 0, [], max_audio_length_ms=800)
    with pytest.raises(ValueError, match="shorten the text or the maximum audio length"):
        small_window.generate("Short.", 0, [], max_audio_length_ms=90_000)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(text=""), "text is empty"),
        (dict(text="   \n"), "text is empty"),
        (dict(speaker=-1), "non-negative integer speaker"),
        (dict(speaker=1.5), "non-negative integer speaker"),
        (dict(speaker="0"), "non-negative integer speaker"),
        (dict(speaker=True), "non-negative integer speaker"),
        (dict(temperature=0), "temperature must be a number above 0"),
        (dict(temperature=-1.0), "temperature must be a number above 0"),
        (dict(topk=0), "top-k must be an integer of at least 1"),
        (dict(topk=2.5), "top-k must be an integer of at least 1"),
        (dict(max_audio_length_ms=0), "max_audio_length_ms must be at least"),
        (dict(seed=-3), "seed must be a non-negative integer"),
        (dict(context=[Segment(0, "nan clip", torch.full((4000,), float("nan")))]), "NaN or infinite"),
        (dict(context=[Segment(0, "inf clip", torch.full((4000,), float("inf")))]), "NaN or infinite"),
        (dict(context=[Segment(0, "empty clip", torch.zeros(0))]), "audio is empty"),
        (dict(context=[Segment(0, "short clip", torch.zeros(1000))]), "shorter than one 80 ms frame"),
        (dict(context=[Segment(0, "", clip(1.0))]), "context clip 1 has no transcript"),
        (dict(context=[Segment(0, "  ", clip(1.0))]), "context clip 1 has no transcript"),
        (dict(context=[Segment(-2, "hi", clip(1.0))]), "context clip 1: speaker must be"),
        (dict(context=[Segment(0, "stereo", torch.zeros(2, 4000))]), "must be a 1-D float tensor"),
        (dict(context=["not a segment"]), "must be a csm.generator.Segment"),
    ],
)
def test_bad_input_raises_clear_value_error(generator, kwargs, message):
    call = dict(text="Hello.", speaker=0, context=[], max_audio_length_ms=400) | kwargs
    with pytest.raises(ValueError, match=message):
        generator.generate(**call)
    with pytest.raises(ValueError, match=message):
        generator.generate_stream(**call)  # raised at the call, before any iteration


def test_stereo_44k_clip_becomes_mono_24k_segment():
    rate, seconds = 44_100, 1.5
    t = np.arange(int(rate * seconds)) / rate
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 440 * t)], axis=1).astype(np.float32)
    segment = Segment.from_audio(1, "a tone", stereo, rate)
    assert segment.audio.dim() == 1 and segment.audio.dtype == torch.float32
    assert abs(segment.audio.numel() - round(seconds * 24_000)) <= 1
    # The mono mix of the two channels: amplitude 0.75 at 440 Hz.
    assert abs(segment.audio[1000:-1000].abs().max().item() - 0.75) < 0.02


def test_load_csm_1b_is_cached_per_repo_device_and_dtype(generator, tmp_path):
    repo = str(tiny_checkpoint_dir())
    assert load_csm_1b(device="cpu", repo_id=repo) is generator
    assert load_csm_1b(device=torch.device("cpu"), repo_id=repo) is generator
    other_repo = str(tiny_checkpoint_dir(seed=1))
    assert load_csm_1b(device="cpu", repo_id=other_repo) is not generator
    other_dtype = torch.float32 if generator.model.dtype == torch.bfloat16 else torch.bfloat16  # not the default
    assert load_csm_1b(device="cpu", repo_id=repo, dtype=other_dtype) is not generator
    if torch.cuda.is_available():
        assert load_csm_1b(device="cuda", repo_id=repo) is not generator


def test_original_layout_without_codec_or_tokenizer_explains_what_is_missing(tmp_path, monkeypatch):
    """An original-layout checkpoint carries neither tokenizer nor codec: offline, both errors say what to do."""
    from transformers import CsmForConditionalGeneration

    from csm.loading import CheckpointError
    from csm.text import TokenizerError
    from tests.oracle import save_original_layout

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    oracle = CsmForConditionalGeneration.from_pretrained(tiny_checkpoint_dir())
    folder = save_original_layout(oracle, tmp_path / "original")
    with pytest.raises(TokenizerError, match=r"(?s)unsloth/Llama-3\.2-1B.*local folder"):
        load_csm_1b(device="cpu", repo_id=str(folder))
    shutil.copy(tiny_checkpoint_dir() / "tokenizer.json", folder / "tokenizer.json")
    with pytest.raises(CheckpointError, match=r"(?s)Mimi codec from kyutai/mimi.*local folder"):
        load_csm_1b(device="cpu", repo_id=str(folder))
