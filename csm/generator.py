"""The generator: a conversation (clips + transcripts per speaker) in, the next turn's 24 kHz speech out.

A prompt is the context segments, oldest first, each as its text frames then its audio frames and
an all-zero end-of-audio frame, followed by the target text's frames. The frame loop
(csm.decoding) prefills the prompt (segments the KV cache still holds from the previous request
are not computed again), then decodes one frame per step, for one take or several at once, until
an all-zero frame or the length limit. Each take's chunks are decoded by its own streaming Mimi
decoder; take 0's are yielded as they come.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor

from csm import loading
from csm.checkpoint import Checkpoint, CheckpointError, read_json, resolve_checkpoint
from csm.codec import MimiCodec, load_codec
from csm.compiling import decoder_is_compiled
from csm.decoding import (  # the chunk sizes and infos: also imported from here by callers
    CHUNK_FRAMES,
    FIRST_CHUNK_FRAMES,
    FrameLoop,
    GenerationInfo,
    PromptPart,
    TakeInfo,
    check_first_chunk_frames,
)
from csm.frame_step import FrameStep
from csm.inputs import (  # Segment, FRAME_MS and MAX_TAKES: also imported from here by callers
    FRAME_MS,
    MAX_TAKES,
    Segment,
    check_context,
    check_max_length,
    check_pinned,
    check_sampling,
    check_seed,
    check_speaker,
    check_takes,
    check_text,
)
from csm.models import Model
from csm.quantize import check_quantize
from csm.text import TextTokenizer

__all__ = [
    "CHUNK_FRAMES", "FIRST_CHUNK_FRAMES", "FRAME_MS", "MAX_TAKES", "ContextPlan", "GenerationInfo", "GenerationStream",
    "Generator", "PromptPart", "Segment", "TakeInfo", "load_csm_1b",
]  # fmt: skip


@dataclass
class ContextPlan:
    """What a generation will do with its context: the indices it drops (ascending) and the prompt's frames."""

    dropped: list[int]
    prompt_frames: int
    context_frames: list[int] = field(default_factory=list)  # each context segment's frames, kept or not
    target_frames: int = 0  # the text to speak


class GenerationStream:
    """One generation's audio chunks (take 0's: iterate over it) and its `info`, complete once iteration ends.

    Each stream carries its own info, so concurrent callers never read one another's. With several
    takes, `info.takes[i].audio` holds each take's whole audio once iteration ends.
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
        self._loop = FrameLoop(model)  # owns the KV cache and which context it holds

    @property
    def frame_step(self) -> FrameStep:
        """The decode step (a CUDA graph per number of takes on CUDA)."""
        return self._loop.frame_step

    @frame_step.setter
    def frame_step(self, step: FrameStep) -> None:
        self._loop.frame_step = step

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

    def generate_takes(self, text: str, speaker: int, context: list[Segment], max_audio_length_ms: float = 90_000,
                       temperature: float = 0.9, topk: int = 50, seed: int | None = None, pinned: int = 0,
                       takes: int = 2) -> list[Tensor]:  # fmt: skip
        """`takes` versions of the utterance from one pass (one prefill), each 1-D float audio at `sample_rate`."""
        stream = self.generate_stream(text, speaker, context, max_audio_length_ms, temperature, topk, seed, pinned,
                                      takes=takes)  # fmt: skip
        for _ in stream:
            pass
        return [take.audio for take in stream.info.takes]

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
        takes: int = 1,
        first_chunk_frames: int | None = None,
    ) -> GenerationStream:
        """1-D audio chunks as frames are produced; the stream's `info` (and `last_generation`) describe the run.

        With `takes` > 1, as many versions are sampled in one pass, each with its own randomness: the
        chunks are take 0's, and once iteration ends `info.takes[i]` has each take's codes, frames,
        end and audio. When the context does not fit the window, segments are dropped as
        `fit_context` says: the oldest first, the first `pinned` (speaker prompts) last. The first
        chunk has `first_chunk_frames` frames (None: FIRST_CHUNK_FRAMES), the others CHUNK_FRAMES; the
        codes are the same whatever its size, the audio up to float rounding. Bad input raises here,
        before any chunk; the work starts with the first `next()`.
        """
        check_text(text)
        check_speaker(speaker)
        check_sampling(temperature, topk)
        check_max_length(max_audio_length_ms)
        context = check_context(context, self.codec.samples_per_frame, self.sample_rate)
        check_pinned(pinned, len(context))
        check_seed(seed)
        check_takes(takes)
        first_chunk_frames = check_first_chunk_frames(first_chunk_frames)
        seed = random.randrange(2**31) if seed is None else seed
        info = GenerationInfo(seed=seed, takes=[TakeInfo() for _ in range(takes)])
        max_frames = int(max_audio_length_ms // FRAME_MS)
        target = self._target_part(speaker, text)
        self._budget(len(target.tokens), max_frames)  # raises now if the text alone cannot fit
        chunks = self._stream(target, context, pinned, max_frames, temperature, topk, first_chunk_frames, info)
        return GenerationStream(chunks, info)

    def _stream(self, target: PromptPart, context, pinned, max_frames, temperature, topk, first_chunk_frames,
                info) -> Iterator[Tensor]:  # fmt: skip
        with self._lock:
            keys = [self._segment_key(s) for s in context]  # hashes the audio: once per segment
            encoded = [self._segment_part(s, key) for s, key in zip(context, keys)]
            dropped = self.fit_context(len(target.tokens), [len(p.tokens) for p in encoded], max_frames, pinned)
            parts = [part for i, part in enumerate(encoded) if i not in dropped] + [target]
            info.dropped_context, info.prompt_frames = dropped, sum(len(part.tokens) for part in parts)
            self.last_generation = info
            yield from self._takes_audio(parts, max_frames, temperature, topk, first_chunk_frames, info)

    def stream_parts(self, parts: list[PromptPart], max_frames: int, temperature: float, topk: int,
                     info: GenerationInfo, first_chunk_frames: int | None = None) -> Iterator[Tensor]:  # fmt: skip
        """`generate_stream` from a prompt already made of frames: the context parts, then the target text's.

        For prompts made of token ids (the benchmark); no context fitting, and no input checks but the
        first chunk's size (None: FIRST_CHUNK_FRAMES), which raises at the first `next()`.
        """
        first_chunk_frames = check_first_chunk_frames(first_chunk_frames)
        with self._lock:
            info.prompt_frames = sum(len(part.tokens) for part in parts)
            yield from self._takes_audio(parts, max_frames, temperature, topk, first_chunk_frames, info)

    def _takes_audio(self, parts, max_frames, temperature, topk, first_chunk_frames,
                     info: GenerationInfo) -> Iterator[Tensor]:  # fmt: skip
        """Take 0's audio chunks as they come. Every take's chunks are decoded by its own streaming
        decoder (so each is cut as take 0 is), the others' after take 0's chunk is yielded; each take's
        whole audio is in `info.takes` at the end."""
        torch.manual_seed(info.seed)
        decoders = [self.codec.stream_decoder() for _ in info.takes]
        pieces: list[list[Tensor]] = [[] for _ in info.takes]
        try:
            max_code = self.codec.codebook_size - 1
            for chunks in self._loop.run(parts, max_frames, temperature, topk, info, max_code, first_chunk_frames):
                for take, codes in enumerate(chunks):
                    if codes.shape[1]:
                        pieces[take].append(decoders[take].decode(codes).cpu())
                        if take == 0:
                            yield pieces[0][-1]
        finally:  # also when the stream is closed early: each take's audio so far
            for take, audio in zip(info.takes, pieces):
                take.audio = torch.cat(audio) if audio else torch.zeros(0)


# ---------------------------------------------------------------------------------------------
# Loading, cached: a second call for the same (repo, revision, device, dtype, quantize, compiling) is free.

_generators: dict[tuple, Generator] = {}
_generators_lock = threading.Lock()


def load_csm_1b(device=None, repo_id: str = "sesame/csm-1b", revision: str | None = None, token: str | None = None,
                dtype: torch.dtype | None = None, quantize: str | None = None,
                compile_decoder: bool = False) -> Generator:  # fmt: skip
    """The generator for a checkpoint; `quantize="int8"` loads int8 weights, "int8-dynamic" int8 activations
    too; `compile_decoder` compiles the depth decoder's step on the CPU (csm.loading.load_model)."""
    quantize = check_quantize(quantize)
    device = loading.resolve_device(device)
    check_quantize(quantize, device)
    dtype = dtype or loading.default_dtype(device)
    key = (str(repo_id), revision, str(device), dtype, quantize, compile_decoder)
    with _generators_lock:
        if key not in _generators:
            _generators[key] = _build_generator(str(repo_id), revision, token, device, dtype, quantize, compile_decoder)
        return _generators[key]


def _build_generator(repo_id, revision, token, device, dtype, quantize, compile_decoder=False) -> Generator:
    checkpoint = resolve_checkpoint(repo_id, revision=revision, token=token)
    model = loading.load_model(
        checkpoint, device=device, dtype=dtype, quantize=quantize, compile_decoder=compile_decoder
    )
    tokenizer_file = checkpoint.other_file("tokenizer.json")
    tokenizer = TextTokenizer.from_pretrained(tokenizer_file.parent if tokenizer_file else repo_id, token=token)
    carried = loading.codec_weights(checkpoint)
    if carried is not None:
        codec_config, codec_state = carried
        codec = load_codec(None, model.num_codebooks, device=device, codec_config=codec_config,
                           codec_state_dict=codec_state, quantize=quantize)  # fmt: skip
    else:
        codec = load_codec("kyutai/mimi", model.num_codebooks, device=device, token=token, quantize=quantize)
    # Shown wherever the model is named (the app's reports).
    weights = {"int8": ", int8 weights", "int8-dynamic": ", int8 weights and int8 activations after norms"}.get(
        quantize, ""
    )
    # Not if compiling failed; several takes run eagerly (the manifest's `decoder` says which a run took).
    compiled = ", depth decoder compiled for one take" if decoder_is_compiled(model) else ""
    return Generator(model, tokenizer, codec, description=_describe(checkpoint) + weights + compiled)


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
