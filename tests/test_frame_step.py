"""The generator's frame loop (static decode step, CUDA graph on CUDA) equals the plain reference loop."""

import contextlib
import logging

import pytest
import torch

from csm.frame_step import FrameStep
from csm.generator import MAX_TAKES, Segment, load_csm_1b
from csm.tiny import tiny_checkpoint_dir


def plain_frames(model, tokens, mask, num_frames: int, topk: int = 1) -> torch.Tensor:
    """The reference loop: generate_frame on whole frames, fed back with the text column masked out."""
    model.reset_caches()
    pos = torch.arange(tokens.shape[1], device=tokens.device)[None]
    frames = []
    for _ in range(num_frames):
        frame = model.generate_frame(tokens, mask, pos, temperature=1.0, topk=topk)
        if (frame == 0).all():
            break
        frames.append(frame)
        tokens = torch.cat([frame, torch.zeros_like(frame[:, :1])], dim=1)[:, None]
        mask = torch.ones_like(tokens, dtype=torch.bool)
        mask[..., -1] = False
        pos = pos[:, -1:] + 1
    return torch.cat(frames).T


def prompt(generator, context, text, speaker):
    parts = [generator._segment_part(s) for s in context] + [generator._target_part(speaker, text)]
    return torch.cat([part.tokens for part in parts])[None], torch.cat([part.mask for part in parts])[None]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (the CUDA-graph path)"))])  # fmt: skip
def test_generator_frames_equal_plain_loop(device):
    generator = load_csm_1b(device=device, repo_id=str(tiny_checkpoint_dir()), dtype=torch.float32)
    assert generator.frame_step.use_cuda_graph == (device == "cuda")
    t = torch.arange(36_000) / 24_000
    context = [Segment(0, "a context turn", 0.3 * torch.sin(2 * torch.pi * 200 * t))]
    generator.generate("Compare the loops.", 1, context, max_audio_length_ms=2400, topk=1, seed=0)
    fast = generator.last_generation.codes
    tokens, mask = prompt(generator, context, "Compare the loops.", 1)
    plain = plain_frames(generator.model, tokens, mask, 2400 // 80).cpu()
    assert fast.shape[1] > 8
    assert torch.equal(fast, plain.clamp(max=generator.codec.codebook_size - 1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_step_equals_eager_step_when_sampling():
    generator = load_csm_1b(device="cuda", repo_id=str(tiny_checkpoint_dir()), dtype=torch.float32)
    model = generator.model
    eager, graphed = FrameStep(model, use_cuda_graph=False), FrameStep(model, use_cuda_graph=True)
    graphed.prepare(0.9, 1)
    frame = torch.randint(1, 2000, (1, model.num_codebooks), device="cuda")
    position = torch.tensor([[5]], device="cuda")
    assert torch.equal(graphed(frame, position, 0.9, 1), eager(frame, position, 0.9, 1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_each_number_of_takes_gets_its_own_graph_equal_to_the_eager_step():
    generator = load_csm_1b(device="cuda", repo_id=str(tiny_checkpoint_dir()), dtype=torch.float32)
    model = generator.model
    model.setup_caches(MAX_TAKES)  # a row per take (the generator's graphs notice: they are captured anew)
    eager, graphed = FrameStep(model, use_cuda_graph=False), FrameStep(model, use_cuda_graph=True)
    for rows in (1, 3):
        graphed.prepare(0.9, 1, rows)
    assert set(graphed.graphs) == {(1, 0.9, 1), (3, 0.9, 1)}
    frame = torch.randint(1, 2000, (3, model.num_codebooks), device="cuda")
    position = torch.tensor([[5]], device="cuda")
    assert torch.equal(graphed(frame, position, 0.9, 1), eager(frame, position, 0.9, 1))
    assert torch.equal(graphed(frame[:1], position, 0.9, 1), eager(frame[:1], position, 0.9, 1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_takes_on_cuda_replay_their_graph_like_the_eager_pass(monkeypatch):
    generator = load_csm_1b(device="cuda", repo_id=str(tiny_checkpoint_dir()), dtype=torch.float32)
    t = torch.arange(24_000) / 24_000
    context = [Segment(0, "a context turn", 0.3 * torch.sin(2 * torch.pi * 220 * t))]

    def takes_codes(topk: int, seed: int) -> list[torch.Tensor]:
        generator.generate_takes("Takes.", 1, context, max_audio_length_ms=1600, topk=topk, seed=seed, takes=3)
        return [take.codes for take in generator.last_generation.takes]

    greedy, sampled = takes_codes(1, 0), takes_codes(50, 3)
    assert (3, 0.9, 1) in generator.frame_step.graphs and (3, 0.9, 50) in generator.frame_step.graphs
    assert greedy[0].shape[1] > 4 and all(torch.equal(codes, greedy[0]) for codes in greedy)
    assert all(torch.equal(a, b) for a, b in zip(sampled, takes_codes(50, 3)))  # the seed reproduces them
    assert not torch.equal(sampled[0], sampled[1])
    monkeypatch.setattr(generator, "frame_step", FrameStep(generator.model, use_cuda_graph=False))
    assert all(torch.equal(a, b) for a, b in zip(greedy, takes_codes(1, 0)))  # replayed as run eagerly


def test_graphs_are_dropped_once_the_caches_they_read_are_set_up_anew():
    model = load_csm_1b(device="cpu", repo_id=str(tiny_checkpoint_dir()), dtype=torch.float32).model
    step = FrameStep(model)
    step.prepare(0.9, 50)
    step.graphs[(1, 0.9, 50)] = ("a graph captured on these caches", None)
    step.prepare(0.9, 50)
    assert (1, 0.9, 50) in step.graphs
    model.setup_caches(MAX_TAKES)  # as the generator does for the first request with several takes
    step.prepare(0.9, 50, rows=2)
    assert not step.graphs  # its replays would read the old caches


class FakeStream:
    """Stands in for a CUDA stream on the CPU, so that the warm-up before the capture really runs."""

    def wait_stream(self, other) -> None:
        pass


def fail_capture(*args, **kwargs):
    raise RuntimeError("operation not permitted when stream is capturing")


@pytest.mark.parametrize("where", ["warm-up", "capture"])
def test_failed_capture_falls_back_to_eager_with_one_log_line(where, monkeypatch, caplog):
    """A capture that fails, before or after the warm-up wrote the caches and drew random numbers, costs speed only."""
    generator = load_csm_1b(device="cpu", repo_id=str(tiny_checkpoint_dir()), dtype=torch.float32)
    t = torch.arange(24_000) / 24_000
    context = [Segment(0, "a context turn", 0.3 * torch.sin(2 * torch.pi * 220 * t))]

    def sampled_codes() -> torch.Tensor:
        generator.generate("Fall back.", 1, context, max_audio_length_ms=1600, temperature=0.9, topk=50, seed=3)
        return generator.last_generation.codes

    eager = sampled_codes()
    if where == "warm-up":
        monkeypatch.setattr(torch.cuda, "Stream", fail_capture)
    else:
        monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
        monkeypatch.setattr(torch.cuda, "current_stream", FakeStream)
        monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
        monkeypatch.setattr(torch.cuda, "CUDAGraph", fail_capture)
    forced = FrameStep(generator.model, use_cuda_graph=True)  # as on CUDA: capture in prepare()
    monkeypatch.setattr(generator, "frame_step", forced)
    with caplog.at_level(logging.WARNING, logger="csm"):
        fallen_back = sampled_codes()
        again = sampled_codes()  # no second attempt, no second line
    assert torch.equal(fallen_back, eager) and torch.equal(again, eager)
    assert eager.shape[1] > 4
    assert not forced.use_cuda_graph and not forced.graphs
    lines = [r for r in caplog.records if r.name == "csm"]
    assert len(lines) == 1 and "CUDA graph capture failed" in lines[0].getMessage()
    assert "runs eagerly" in lines[0].getMessage()
