"""The frame loop: a prompt prefilled once, then one frame per step for 1 to MAX_TAKES takes at once.

The backbone's KV cache outlives a request. `FrameLoop` remembers which context segments it holds
from position 0, so a prompt that starts with them prefills only what is new (`_prefill`).

Takes are rows of one batch. The prompt is prefilled at batch 1 into row 0 of the cache, whatever
the number of takes; for several takes, row 0's prompt slots are then copied into the other rows
and each row samples its own frames from there. So the prompt costs what one take's does, and row
0 holds what a single take would leave there (reuse across requests works after either). The
decode step (csm.frame_step) runs all rows at once, with static shapes per batch size.

A take ends at its first all-zero frame: its row goes on being computed with the others (shapes
stay static) but its codes are no longer taken. The pass ends when every take has ended or at the
length limit. Frames are checked for the end once per chunk, so the loop never waits on the device
between chunks' boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, NamedTuple

import torch
from torch import Tensor

from csm.frame_step import FrameStep
from csm.inputs import MAX_TAKES
from csm.models import Model

# The first chunk is one frame (80 ms of audio): on a CPU a frame takes ~0.4 s, so each frame more in it
# is that much later first audio. Mimi's streaming decoder gives the same samples however the codes are
# chunked (up to float rounding: convolutions over other lengths sum in another order), so the chunk plan
# changes when audio comes, not what it says; a watermark applied per chunk (the app's) depends on it.
FIRST_CHUNK_FRAMES = 1
CHUNK_FRAMES = 8  # then ~0.64 s per chunk: fewer host syncs and decoder calls


def check_first_chunk_frames(first_chunk_frames) -> int:
    """The first chunk's size in frames: None means FIRST_CHUNK_FRAMES; else a whole number 1..CHUNK_FRAMES."""
    if first_chunk_frames is None:
        return FIRST_CHUNK_FRAMES
    whole = isinstance(first_chunk_frames, int) and not isinstance(first_chunk_frames, bool)
    if not whole or not 1 <= first_chunk_frames <= CHUNK_FRAMES:
        raise ValueError(
            f"first_chunk_frames (frames in the first streamed chunk) must be an integer from 1 to {CHUNK_FRAMES} "
            f"or None (for {FIRST_CHUNK_FRAMES}), got {first_chunk_frames!r}"
        )
    return first_chunk_frames


class PromptPart(NamedTuple):
    """One piece of a prompt as frames: a context segment (key: its cache key) or the target text (key None)."""

    key: tuple | None
    tokens: Tensor  # [S, N+1]
    mask: Tensor  # [S, N+1], bool: which columns are present


@dataclass
class TakeInfo:
    """One take of a generation: its codes, why it stopped, and its audio once the pass has ended."""

    frames: int = 0
    ended_by_model: bool = False
    codes: Tensor | None = None  # [N, frames]: the generated codes, on the CPU
    audio: Tensor | None = None  # 1-D float audio; set when the pass ends (or is closed: what was made)


@dataclass
class GenerationInfo:
    """What a generation did: the seed (to reproduce it), dropped context, and each take's result.

    `frames`, `ended_by_model` and `codes` are take 0's: the take that streams.
    """

    seed: int
    dropped_context: list[int] = field(default_factory=list)  # indices into the context passed in
    prompt_frames: int = 0
    reused_prompt_frames: int = 0  # context frames whose KV the cache still held from the last request
    takes: list[TakeInfo] = field(default_factory=lambda: [TakeInfo()])

    @property
    def frames(self) -> int:
        return self.takes[0].frames

    @property
    def ended_by_model(self) -> bool:
        return self.takes[0].ended_by_model

    @property
    def codes(self) -> Tensor | None:
        return self.takes[0].codes


class FrameLoop:
    """Prefill and decode over the model's KV cache, which it keeps across requests. One pass at a time."""

    def __init__(self, model: Model):
        self.model = model
        model.setup_caches(1)  # more rows only once several takes are asked for: each row is a KV cache
        self.rows = 1
        self.frame_step = FrameStep(model)
        # The context segments whose KV the backbone cache holds, in order from position 0, and the
        # model's cache epoch when they were written (see _prefill).
        self._cached_segments: list[tuple] = []
        self._cached_epoch = -1

    def ensure_rows(self, takes: int) -> None:
        """Caches with a row per take: the first time more than one is asked, MAX_TAKES rows (a cold cache)."""
        if takes > self.rows:
            with torch.inference_mode(False):  # normal tensors, as at start-up: reset_caches works anywhere
                self.model.setup_caches(MAX_TAKES)  # the decode step's CUDA graphs are captured anew
            self.rows = MAX_TAKES

    @torch.inference_mode()
    def run(self, parts: list[PromptPart], max_frames: int, temperature: float, topk: int, info: GenerationInfo,
            max_code: int, first_chunk_frames: int = FIRST_CHUNK_FRAMES) -> Iterator[list[Tensor]]:  # fmt: skip
        """Per chunk, each take's new codes [N, f], clamped to `max_code` (f = 0 once a take has ended).

        The first chunk has `first_chunk_frames` frames, the others CHUNK_FRAMES (the last: what is left).
        One take per entry of `info.takes`; their frames, codes and end are recorded there.
        """
        frame = self._prefill(parts, temperature, topk, info)  # [takes, N]
        pending: list[Tensor] = []
        chunk_size = first_chunk_frames
        for step in range(max_frames):
            if step > 0:
                position = torch.full((1, 1), info.prompt_frames + step - 1, device=self.model.device)
                frame = self.frame_step(frame, position, temperature, topk)  # [takes, N]
            pending.append(frame)
            if len(pending) == chunk_size or step == max_frames - 1:
                chunk = torch.stack(pending, dim=-1)  # [takes, N, f]
                pending, chunk_size = [], CHUNK_FRAMES
                yield take_chunks(chunk, info.takes, max_code)
                if all(take.ended_by_model for take in info.takes):
                    return

    def _prefill(self, parts: list[PromptPart], temperature: float, topk: int, info: GenerationInfo) -> Tensor:
        """Fill the backbone cache with the prompt and sample the first frame of each take [takes, N].

        The prompt goes in one part (context segment, then the target text, last) at a time. The
        leading segments that the cache still holds from the previous request, at the same
        positions, are skipped: with preset voices and a growing conversation most of a prompt
        recurs, and this makes the time to first audio that of the new part only. Prefilling part
        by part on every request, cold or warm, keeps the results bit-identical either way.
        """
        model, takes = self.model, len(info.takes)
        self.ensure_rows(takes)
        self.frame_step.prepare(temperature, topk, takes)  # may capture a CUDA graph (resets the caches)
        reuse = 0
        if self._cached_epoch == model.cache_epoch:
            for part, cached_key in zip(parts[:-1], self._cached_segments):
                if part.key != cached_key:
                    break
                reuse += 1
        self._cached_segments = []  # until this prefill has completed
        start = info.reused_prompt_frames = sum(len(part.tokens) for part in parts[:reuse])
        for part in parts[reuse:-1]:
            # Slots past the prompt may hold an older request's KV: causal masking (and, on the
            # CPU, attending over the written slots only) keeps them out, so no reset is needed.
            model.backbone_hidden(part.tokens[None], part.mask[None], self._positions(start, part))
            start += len(part.tokens)
        target = parts[-1]  # the target text: it gives the first frame
        positions = self._positions(start, target)
        if takes == 1:
            frame = model.generate_frame(target.tokens[None], target.mask[None], positions, temperature, topk)
        else:
            last = model.backbone_hidden(target.tokens[None], target.mask[None], positions)[:, -1]
            share_prompt(model, takes, start + len(target.tokens))
            frame = model.sample_frame(last.expand(takes, -1).contiguous(), temperature, topk)
        self._cached_segments = [part.key for part in parts[:-1]]
        self._cached_epoch = model.cache_epoch
        return frame

    def _positions(self, start: int, part: PromptPart) -> Tensor:
        return torch.arange(start, start + len(part.tokens), device=self.model.device)[None]


def share_prompt(model: Model, rows: int, length: int) -> None:
    """Copy row 0's first `length` backbone cache slots (the prompt) into rows 1..rows-1."""
    for layer in model.backbone.layers:
        cache = layer.attn.kv_cache
        cache.k[1:rows, :, :length] = cache.k[:1, :, :length]
        cache.v[1:rows, :, :length] = cache.v[:1, :, :length]


def take_chunks(chunk: Tensor, takes: list[TakeInfo], max_code: int) -> list[Tensor]:
    """Split a chunk [takes, N, f] into each take's codes up to its first all-zero frame; record them."""
    frames = chunk.shape[2]
    ended = (chunk == 0).all(dim=1)  # [takes, f]
    # The first all-zero frame of each take, or f: the one host sync per chunk.
    ends = torch.where(ended.any(dim=1), ended.int().argmax(dim=1), frames).tolist()
    out = []
    for take, codes, end in zip(takes, chunk, ends):
        if take.ended_by_model:  # ended in an earlier chunk: its row's frames mean nothing now
            end = 0
        take.ended_by_model = take.ended_by_model or end < frames
        take.frames += end
        # Codes the codec has no entry for (the model's vocabulary has 3 more) are never produced
        # by the trained model; clamp rather than fail deep inside the codec.
        codes = codes[:, :end].clamp(max=max_code)
        if end:
            take.codes = codes.cpu() if take.codes is None else torch.cat([take.codes, codes.cpu()], dim=1)
        out.append(codes)
    return out
