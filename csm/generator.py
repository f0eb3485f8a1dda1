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
import random
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import Tensor

from csm import loading
from csm.codec import MimiCodec, load_codec
from csm.frame_step import FrameStep
from csm.models import Model
from csm.text import TextTokenizer

FRAME_MS = 80  # Mimi: 12.5 frames per second
FIRST_CHUNK_FRAMES = 2  # small first chunk: time to first audio
CHUNK_FRAMES = 8  # then ~0.64 s per chunk: fewer host syncs and decoder calls


@dataclass
class Segment:
    """One turn of a conversation: who spoke, what they said, and the 1-D audio at the generator's rate."""

    speaker: int
    text: str
    audio: Tensor

    @classmethod
    def from_audio(cls, speaker: int, text: str, audio, sample_rate: int, target_rate: int = 24_000) -> "Segment":
        """Any channel count and sample rate -> a mono Segment at `target_rate`."""
        from csm.audio import to_mono

        return cls(speaker, text, to_mono(audio, sample_rate, target_rate))

    @classmethod
    def from_file(cls, speaker: int, text: str, path, target_rate: int = 24_000) -> "Segment":
        from csm.audio import load_audio

        audio, rate = load_audio(path)
        return cls.from_audio(speaker, text, audio, rate, target_rate)


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
# Input checks: every bad input is a ValueError a person can act on.


def check_speaker(speaker, what: str = "speaker") -> None:
    if isinstance(speaker, bool) or not isinstance(speaker, int) or speaker < 0:
        raise ValueError(f"{what} must be a non-negative integer speaker ID such as 0 or 1, got {speaker!r}")


def check_text(text, what: str = "text") -> None:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{what} is empty: type what should be said")


def check_settings(temperature, topk, max_audio_length_ms) -> None:
    if not isinstance(temperature, (int, float)) or not temperature > 0 or temperature != temperature:
        raise ValueError(f"temperature must be a number above 0 (0.9 is typical), got {temperature!r}")
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise ValueError(f"top-k must be an integer of at least 1 (50 is typical; 1 is greedy), got {topk!r}")
    if not isinstance(max_audio_length_ms, (int, float)) or not max_audio_length_ms >= FRAME_MS:
        raise ValueError(f"max_audio_length_ms must be at least {FRAME_MS} (one frame), got {max_audio_length_ms!r}")


def check_segment(segment: Segment, index: int, samples_per_frame: int, sample_rate: int) -> None:
    where = f"context clip {index + 1}"
    if not isinstance(segment, Segment):
        raise ValueError(f"{where} must be a csm.generator.Segment, got {type(segment).__name__}")
    check_speaker(segment.speaker, f"{where}: speaker")
    if not isinstance(segment.text, str) or not segment.text.strip():
        raise ValueError(f"{where} has no transcript: type the words spoken in the clip")
    audio = segment.audio
    if not isinstance(audio, Tensor) or audio.dim() != 1:
        shape = tuple(audio.shape) if isinstance(audio, Tensor) else type(audio).__name__
        raise ValueError(
            f"{where}: audio must be a 1-D float tensor at {sample_rate} Hz, got {shape}; "
            "use Segment.from_audio(...) to convert other rates and channel counts"
        )
    if audio.numel() == 0:
        raise ValueError(f"{where}: the audio is empty")
    if not torch.isfinite(audio).all():
        raise ValueError(f"{where}: the audio contains NaN or infinite samples")
    if audio.numel() < samples_per_frame:
        raise ValueError(
            f"{where}: the audio is {1000 * audio.numel() / sample_rate:.0f} ms long, shorter than one "
            f"{FRAME_MS} ms frame; use a clip of at least a second"
        )


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
        self._encoded: OrderedDict[tuple, Tensor] = OrderedDict()  # LRU of encoded context segments
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

    def _segment_frames(self, segment: Segment, key: tuple | None = None) -> tuple[Tensor, Tensor]:
        """Text then audio frames of a context segment; cached, as presets recur in every request."""
        key = key or self._segment_key(segment)
        if key not in self._encoded:
            text, text_mask = self._text_frames(segment.speaker, segment.text)
            audio, audio_mask = self._audio_frames(segment.audio)
            self._encoded[key] = (torch.cat([text, audio]), torch.cat([text_mask, audio_mask]))
            if len(self._encoded) > 64:
                self._encoded.popitem(last=False)
        self._encoded.move_to_end(key)
        return self._encoded[key]

    def segment_frames(self, segment: Segment) -> int:
        """Frames a context segment takes in the model's window: its text, its audio, the end-of-audio frame."""
        text = len(self.tokenizer.encode_segment(segment.speaker, segment.text))
        return text + -(-segment.audio.numel() // self.codec.samples_per_frame) + 1  # Mimi pads the last frame

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

    def fit_context(self, target_frames: int, context_frames: list[int], max_frames: int) -> list[int]:
        """Indices of the context segments to drop, oldest first, so the prompt plus output fits."""
        budget = self._budget(target_frames, max_frames)
        dropped, total = [], sum(context_frames)
        for i, n in enumerate(context_frames):
            if total <= budget:
                break
            dropped.append(i)
            total -= n
        return dropped

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
    ) -> Tensor:
        """The whole utterance as 1-D float audio at `sample_rate`."""
        chunks = list(self.generate_stream(text, speaker, context, max_audio_length_ms, temperature, topk, seed))
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
    ) -> GenerationStream:
        """1-D audio chunks as frames are produced; the stream's `info` (and `last_generation`) describe the run.

        Bad input raises here, before any chunk; the work starts with the first `next()`.
        """
        check_text(text)
        check_speaker(speaker)
        check_settings(temperature, topk, max_audio_length_ms)
        context = list(context or [])
        for i, segment in enumerate(context):
            check_segment(segment, i, self.codec.samples_per_frame, self.sample_rate)
        if seed is None:
            seed = random.randrange(2**31)
        elif isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        max_frames = int(max_audio_length_ms // FRAME_MS)
        target = self._text_frames(speaker, text)
        self._budget(len(target[0]), max_frames)  # raises now if the text alone cannot fit
        info = GenerationInfo(seed=seed)
        return GenerationStream(self._stream(target, context, max_frames, temperature, topk, info), info)

    def _stream(self, target, context, max_frames, temperature, topk, info: GenerationInfo) -> Iterator[Tensor]:
        with self._lock:
            keys = [self._segment_key(s) for s in context]  # hashes the audio: once per segment
            encoded = [(key, *self._segment_frames(s, key)) for s, key in zip(context, keys)]
            dropped = self.fit_context(len(target[0]), [len(t) for _, t, _ in encoded], max_frames)
            parts = [e for i, e in enumerate(encoded) if i not in dropped] + [(None, *target)]
            info.dropped_context, info.prompt_frames = dropped, sum(len(t) for _, t, _ in parts)
            self.last_generation = info

            torch.manual_seed(info.seed)
            decoder = self.codec.stream_decoder()
            for codes in self._frames(parts, max_frames, temperature, topk, info):
                yield decoder.decode(codes).cpu()

    @torch.inference_mode()
    def _prefill(self, parts: list[tuple], temperature: float, topk: int, info: GenerationInfo) -> Tensor:
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
            for (key, _, _), cached in zip(parts[:-1], self._cached_segments):
                if key != cached:
                    break
                reuse += 1
        self._cached_segments = []  # until this prefill has completed
        start = info.reused_prompt_frames = sum(len(tokens) for _, tokens, _ in parts[:reuse])
        for key, tokens, mask in parts[reuse:]:
            # Slots past the prompt may hold an older request's KV: causal masking (and, on the
            # CPU, attending over the written slots only) keeps them out, so no reset is needed.
            positions = torch.arange(start, start + len(tokens), device=self.device)[None]
            if key is None:  # the target text, last: it gives the first frame
                frame = model.generate_frame(tokens[None], mask[None], positions, temperature, topk)
            else:
                model.backbone_hidden(tokens[None], mask[None], positions)
            start += len(tokens)
        self._cached_segments = [key for key, _, _ in parts[:-1]]
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
# Loading, cached: a second call for the same (repo, revision, device, dtype) is free.

_generators: dict[tuple, Generator] = {}
_generators_lock = threading.Lock()


def load_csm_1b(device=None, repo_id: str = "sesame/csm-1b", revision: str | None = None, token: str | None = None,
                dtype: torch.dtype | None = None) -> Generator:  # fmt: skip
    device = loading.resolve_device(device)
    dtype = dtype or loading.default_dtype(device)
    key = (str(repo_id), revision, str(device), dtype)
    with _generators_lock:
        if key not in _generators:
            _generators[key] = _build_generator(str(repo_id), revision, token, device, dtype)
        return _generators[key]


def _build_generator(repo_id, revision, token, device, dtype) -> Generator:
    checkpoint = loading.resolve_checkpoint(repo_id, revision=revision, token=token)
    model = loading.load_model(checkpoint, device=device, dtype=dtype)
    tokenizer_file = checkpoint.other_file("tokenizer.json")
    tokenizer = TextTokenizer.from_pretrained(tokenizer_file.parent if tokenizer_file else repo_id, token=token)
    carried = loading.codec_weights(checkpoint)
    if carried is not None:
        codec_config, codec_state = carried
        codec = load_codec(None, model.num_codebooks, device=device, codec_config=codec_config,
                           codec_state_dict=codec_state)  # fmt: skip
    else:
        codec = load_codec("kyutai/mimi", model.num_codebooks, device=device, token=token)
    return Generator(model, tokenizer, codec, description=_describe(checkpoint))


def _describe(checkpoint: loading.Checkpoint) -> str:
    marker = checkpoint.other_file("csm_studio.json")
    if marker is not None:
        import json

        if json.loads(marker.read_text()).get("csm_studio_tiny"):
            return "tiny random model: its output is noise"
    return f"{checkpoint.source} ({checkpoint.layout} layout)"
