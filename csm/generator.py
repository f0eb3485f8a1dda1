"""The generator: a conversation (clips + transcripts per speaker) in, the next turn's 24 kHz speech out.

A prompt is the context segments, oldest first, each as its text frames then its audio frames and
an all-zero end-of-audio frame, followed by the target text's frames. The frame loop
(`_frames`) prefills the prompt (`_prefill`: segments the KV cache still holds from the previous
request are not computed again), then decodes one frame per step until an all-zero frame or the
length limit. Frames are checked for the end only once per chunk, so the loop never waits on the
device between chunks' boundaries; each chunk is decoded by a streaming Mimi decoder and yielded.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple

import torch
from torch import Tensor

from csm import loading
from csm.checkpoint import Checkpoint, CheckpointError, read_json, resolve_checkpoint
from csm.codec import MimiCodec, load_codec
from csm.frame_step import FrameStep
from csm.inputs import (  # Segment and FRAME_MS: also imported from here by callers
    FRAME_MS,
    Segment,
    check_context,
    check_max_length,
    check_pinned,
    check_sampling,
    check_seed,
    check_speaker,
    check_text,
)
from csm.models import Model
from csm.quantize import check_quantize
from csm.text import TextTokenizer

FIRST_CHUNK_FRAMES = 2  # small first chunk: time to first audio
CHUNK_FRAMES = 8  # then ~0.64 s per chunk: fewer host syncs and decoder calls


class PromptPart(NamedTuple):
    """One piece of a prompt as frames: a context segment (key: its cache key) or the target text (key None)."""

    key: tuple | None
    tokens: Tensor  # [S, N+1]
    mask: Tensor  # [S, N+1], bool: which columns are present


@dataclass
class ContextPlan:
    """What a generation will do with its context: the indices it drops (ascending) and the prompt's frames."""

    dropped: list[int]
    prompt_frames: int
    context_frames: list[int] = field(default_factory=list)  # each context segment's frames, kept or not
    target_frames: int = 0  # the text to speak


@dataclass
class GenerationInfo:
    """What the last generation did: the seed (to reproduce it), frames, why it stopped, dropped context."""

    seed: int
    frames: int = 0
    ended_by_model: bool = False
    dropped_context: list[int] = field(default_factory=list)  # indices into the context passed in
    prompt_frames: int = 0
    reused_prompt_frames: int = 0  # context frames whose KV the cache still held from the last request
    codes: Tensor | None = None  # [N, frames]: the generated codes, on the CPU


class GenerationStream:
    """One generation's audio chunks (iterate over it) and its `info`, complete once iteration ends.

    Each stream carries its own info, so concurrent callers never read one another's.
    """

    def __init__(self, chunks: Iterator[Tensor], info: GenerationInfo):
        self._chunks = chunks
        self.info = info

    def __iter__(self) -> "GenerationStream":
        return self

    def __next__(self) -> Tensor:
        return next(self._chunks)

    def close(self) -> None:
        """Stop early (e.g. the listener went away); frees the generator for the next request."""
        self._chunks.close()


# ---------------------------------------------------------------------------------------------


class Generator:
    """Conversational speech generation with CSM. One generation at a time (the KV cache is shared)."""

    def __init__(self, model: Model, tokenizer: TextTokenizer, codec: MimiCodec, description: str = ""):
        self.model = model
        self.tokenizer = tokenizer
        self.codec = codec
        self.description = description
        self.sample_rate = codec.sample_rate
        self.device = model.device
        self.num_codebooks = model.num_codebooks
        self.last_generation: GenerationInfo | None = None
        self._lock = threading.Lock()
        self._encoded: OrderedDict[tuple, PromptPart] = OrderedDict()  # LRU of encoded context segments
        model.setup_caches(1)
        self.frame_step = FrameStep(model)
        # The context segments whose KV the backbone cache holds, in order from position 0, and the
        # model's cache epoch when they were written (see _prefill).
        self._cached_segments: list[tuple] = []
        self._cached_epoch = -1

    # -- frames -----------------------------------------------------------------------------------

    def _text_frames(self, speaker: int, text: str) -> tuple[Tensor, Tensor]:
        ids = torch.tensor(self.tokenizer.encode_segment(speaker, text), device=self.device)
        tokens = torch.zeros(len(ids), self.num_codebooks + 1, dtype=torch.long, device=self.device)
        mask = torch.zeros_like(tokens, dtype=torch.bool)
        tokens[:, -1], mask[:, -1] = ids, True
        return tokens, mask

    def _audio_frames(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        codes = self.codec.encode(audio.to(self.codec.device))  # [N, F]
        # The reference marks the end of every clip with one all-zero frame.
        codes = torch.cat([codes, torch.zeros_like(codes[:, :1])], dim=1).to(self.device)
        tokens = torch.zeros(codes.shape[1], self.num_codebooks + 1, dtype=torch.long, device=self.device)
        mask = torch.zeros_like(tokens, dtype=torch.bool)
        tokens[:, :-1], mask[:, :-1] = codes.T, True
        return tokens, mask

    @staticmethod
    def _segment_key(segment: Segment) -> tuple:
        digest = hashlib.sha1(segment.audio.detach().cpu().float().numpy().tobytes()).hexdigest()
        return segment.speaker, segment.text, digest

    def _target_part(self, speaker: int, text: str) -> PromptPart:
        return PromptPart(None, *self._text_frames(speaker, text))

    def _segment_part(self, segment: Segment, key: tuple | None = None) -> PromptPart:
        """Text then audio frames of a context segment; cached, as presets recur in every request."""
        key = key or self._segment_key(segment)
        if key not in self._encoded:
            text, text_mask = self._text_frames(segment.speaker, segment.text)
            audio, audio_mask = self._audio_frames(segment.audio)
            self._encoded[key] = PromptPart(key, torch.cat([text, audio]), torch.cat([text_mask, audio_mask]))
            if len(self._encoded) > 64:
                self._encoded.popitem(last=False)
        self._encoded.move_to_end(key)
        return self._encoded[key]

    def segment_frames(self, segment: Segment) -> int:
        """Frames a context segment takes in the model's window: its text, its audio, the end-of-audio frame."""
        text = len(self.tokenizer.encode_segment(segment.speaker, segment.text))
        return text + -(-segment.audio.numel() // self.codec.samples_per_frame) + 1  # Mimi pads the last frame

    # -- fitting the context into the window ------------------------------------------------------

    def context_budget(self, text: str, speaker: int, max_audio_length_ms: float) -> int:
        """Frames left for context once the text and the longest reply are reserved; ValueError if none."""
        target_frames = len(self.tokenizer.encode_segment(speaker, text))
        return self._budget(target_frames, int(max_audio_length_ms // FRAME_MS))

    def _budget(self, target_frames: int, max_frames: int) -> int:
        budget = self.model.max_seq_len - max_frames - target_frames
        if budget < 0:
            raise ValueError(
                f"the text ({target_frames} tokens) plus the requested length ({max_frames} frames of "
                f"{FRAME_MS} ms) exceeds the model's {self.model.max_seq_len}-frame window: shorten the text "
                "or the maximum audio length"
            )
        return budget

    def fit_context(self, target_frames: int, context_frames: list[int], max_frames: int, pinned: int = 0) -> list[int]:
        """Indices (ascending) of the context segments to drop so that the prompt plus output fits.

        The oldest go first, except the first `pinned` (speaker prompts: they keep each voice
        recognisable), which go only once every later segment has gone.
        """
        check_pinned(pinned, len(context_frames))
        budget = self._budget(target_frames, max_frames)
        order = [*range(pinned, len(context_frames)), *range(pinned)]
        dropped, total = [], sum(context_frames)
        for i in order:
            if total <= budget:
                break
            dropped.append(i)
            total -= context_frames[i]
        return sorted(dropped)

    def plan_context(self, text: str, speaker: int, context: list[Segment], max_audio_length_ms: float = 90_000,
                     pinned: int = 0) -> ContextPlan:  # fmt: skip
        """What `generate_stream` with these arguments will drop, and the prompt's length, without running the codec."""
        check_text(text)
        check_speaker(speaker)
        check_max_length(max_audio_length_ms)
        context = check_context(context, self.codec.samples_per_frame, self.sample_rate)
        check_pinned(pinned, len(context))
        target_frames = len(self.tokenizer.encode_segment(speaker, text))
        sizes = [self.segment_frames(segment) for segment in context]
        dropped = self.fit_context(target_frames, sizes, int(max_audio_length_ms // FRAME_MS), pinned)
        kept = sum(n for i, n in enumerate(sizes) if i not in dropped)
        return ContextPlan(dropped, kept + target_frames, sizes, target_frames)

    # -- generation -------------------------------------------------------------------------------

    def generate(
        self,
        text: str,
        speaker: int,
        context: list[Segment],
        max_audio_length_ms: float = 90_000,
        temperature: float = 0.9,
        topk: int = 50,
        seed: int | None = None,
        pinned: int = 0,
    ) -> Tensor:
        """The whole utterance as 1-D float audio at `sample_rate`."""
        stream = self.generate_stream(text, speaker, context, max_audio_length_ms, temperature, topk, seed, pinned)
        chunks = list(stream)
        return torch.cat(chunks) if chunks else torch.zeros(0)

    def generate_stream(
        self,
        text: str,
        speaker: int,
        context: list[Segment],
        max_audio_length_ms: float = 90_000,
        temperature: float = 0.9,
        topk: int = 50,
        seed: int | None = None,
        pinned: int = 0,
    ) -> GenerationStream:
        """1-D audio chunks as frames are produced; the stream's `info` (and `last_generation`) describe the run.

        When the context does not fit the window, segments are dropped as `fit_context` says: the
        oldest first, the first `pinned` (speaker prompts) last. Bad input raises here, before any
        chunk; the work starts with the first `next()`.
        """
        check_text(text)
        check_speaker(speaker)
        check_sampling(temperature, topk)
        check_max_length(max_audio_length_ms)
        context = check_context(context, self.codec.samples_per_frame, self.sample_rate)
        check_pinned(pinned, len(context))
        check_seed(seed)
        info = GenerationInfo(seed=random.randrange(2**31) if seed is None else seed)
        max_frames = int(max_audio_length_ms // FRAME_MS)
        target = self._target_part(speaker, text)
        self._budget(len(target.tokens), max_frames)  # raises now if the text alone cannot fit
        chunks = self._stream(target, context, pinned, max_frames, temperature, topk, info)
        return GenerationStream(chunks, info)

    def _stream(self, target: PromptPart, context, pinned, max_frames, temperature, topk, info) -> Iterator[Tensor]:
        with self._lock:
            keys = [self._segment_key(s) for s in context]  # hashes the audio: once per segment
            encoded = [self._segment_part(s, key) for s, key in zip(context, keys)]
            dropped = self.fit_context(len(target.tokens), [len(p.tokens) for p in encoded], max_frames, pinned)
            parts = [part for i, part in enumerate(encoded) if i not in dropped] + [target]
            info.dropped_context, info.prompt_frames = dropped, sum(len(part.tokens) for part in parts)
            self.last_generation = info

            torch.manual_seed(info.seed)
            decoder = self.codec.stream_decoder()
            for codes in self._frames(parts, max_frames, temperature, topk, info):
                yield decoder.decode(codes).cpu()

    @torch.inference_mode()
    def _prefill(self, parts: list[PromptPart], temperature: float, topk: int, info: GenerationInfo) -> Tensor:
        """Fill the backbone cache with the prompt and sample the first frame [1, N].

        The prompt goes in one part (context segment, then the target text) at a time. The leading
        segments that the cache still holds from the previous request, at the same positions, are
        skipped: with preset voices and a growing conversation most of a prompt recurs, and this
        makes the time to first audio that of the new part only. Prefilling part by part on every
        request, cold or warm, keeps the results bit-identical either way.
        """
        model = self.model
        self.frame_step.prepare(temperature, topk)  # may capture a CUDA graph (resets the caches)
        reuse = 0
        if self._cached_epoch == model.cache_epoch:
            for part, cached_key in zip(parts[:-1], self._cached_segments):
                if part.key != cached_key:
                    break
                reuse += 1
        self._cached_segments = []  # until this prefill has completed
        start = info.reused_prompt_frames = sum(len(part.tokens) for part in parts[:reuse])
        for part in parts[reuse:]:
            # Slots past the prompt may hold an older request's KV: causal masking (and, on the
            # CPU, attending over the written slots only) keeps them out, so no reset is needed.
            positions = torch.arange(start, start + len(part.tokens), device=self.device)[None]
            if part.key is None:  # the target text, last: it gives the first frame
                frame = model.generate_frame(part.tokens[None], part.mask[None], positions, temperature, topk)
            else:
                model.backbone_hidden(part.tokens[None], part.mask[None], positions)
            start += len(part.tokens)
        self._cached_segments = [part.key for part in parts[:-1]]
        self._cached_epoch = model.cache_epoch
        return frame

    @torch.inference_mode()
    def _frames(self, parts, max_frames, temperature, topk, info: GenerationInfo) -> Iterator[Tensor]:
        """Yield chunks of codes [N, f] until an all-zero frame (not included) or max_frames."""
        frame = self._prefill(parts, temperature, topk, info)
        prompt_len = info.prompt_frames
        pending: list[Tensor] = []
        chunk_size = FIRST_CHUNK_FRAMES
        for step in range(max_frames):
            if step > 0:
                position = torch.full((1, 1), prompt_len + step - 1, device=self.device)
                frame = self.frame_step(frame, position, temperature, topk)  # [1, N]
            pending.append(frame)
            if len(pending) == chunk_size or step == max_frames - 1:
                chunk = torch.cat(pending).T  # [N, f]
                pending, chunk_size = [], CHUNK_FRAMES
                ended = (chunk == 0).all(dim=0)
                if ended.any():  # the one host sync per chunk
                    chunk = chunk[:, : int(ended.nonzero()[0])]
                    info.ended_by_model = True
                info.frames += chunk.shape[1]
                if chunk.shape[1]:
                    # Codes the codec has no entry for (the model's vocabulary has 3 more) are never
                    # produced by the trained model; clamp rather than fail deep inside the codec.
                    chunk = chunk.clamp(max=self.codec.codebook_size - 1)
                    codes = chunk.cpu()
                    info.codes = codes if info.codes is None else torch.cat([info.codes, codes], dim=1)
                    yield chunk
                if info.ended_by_model:
                    return


# ---------------------------------------------------------------------------------------------
# Loading, cached: a second call for the same (repo, revision, device, dtype, quantize) is free.

_generators: dict[tuple, Generator] = {}
_generators_lock = threading.Lock()


def load_csm_1b(device=None, repo_id: str = "sesame/csm-1b", revision: str | None = None, token: str | None = None,
                dtype: torch.dtype | None = None, quantize: str | None = None) -> Generator:  # fmt: skip
    """The generator for a checkpoint; `quantize="int8"` loads int8 weights (csm.loading.load_model)."""
    quantize = check_quantize(quantize)
    device = loading.resolve_device(device)
    dtype = dtype or loading.default_dtype(device)
    key = (str(repo_id), revision, str(device), dtype, quantize)
    with _generators_lock:
        if key not in _generators:
            _generators[key] = _build_generator(str(repo_id), revision, token, device, dtype, quantize)
        return _generators[key]


def _build_generator(repo_id, revision, token, device, dtype, quantize) -> Generator:
    checkpoint = resolve_checkpoint(repo_id, revision=revision, token=token)
    model = loading.load_model(checkpoint, device=device, dtype=dtype, quantize=quantize)
    tokenizer_file = checkpoint.other_file("tokenizer.json")
    tokenizer = TextTokenizer.from_pretrained(tokenizer_file.parent if tokenizer_file else repo_id, token=token)
    carried = loading.codec_weights(checkpoint)
    if carried is not None:
        codec_config, codec_state = carried
        codec = load_codec(None, model.num_codebooks, device=device, codec_config=codec_config,
                           codec_state_dict=codec_state)  # fmt: skip
    else:
        codec = load_codec("kyutai/mimi", model.num_codebooks, device=device, token=token)
    weights = ", int8 weights" if quantize else ""  # shown wherever the model is named (the app's reports)
    return Generator(model, tokenizer, codec, description=_describe(checkpoint) + weights)


def _describe(checkpoint: Checkpoint) -> str:
    """What the app shows as the model: a Hub repo by its id, a local folder by its name only (no server path)."""
    marker = checkpoint.other_file("csm_studio.json")
    if marker is not None:
        try:
            if read_json(marker, checkpoint.source).get("csm_studio_tiny"):
                return "tiny random model: its output is noise"
        except CheckpointError:  # an unreadable marker only means: not our tiny model
            pass
    if checkpoint.local_folder is None:
        return f"{checkpoint.source} ({checkpoint.layout} layout)"
    name = Path(os.path.abspath(checkpoint.local_folder)).name or "checkpoint"  # the name as given, "" for the root
    return f"{name} ({checkpoint.layout} layout, local folder)"
