"""Speed and memory of our CSM next to transformers' CsmForConditionalGeneration: same weights, same run.

    python -m bench.bench [--device cpu|cuda] [--dtype float32|bfloat16|float16] [--frames N]
                          [--repeats R] [--small] [--json out.json] [--checkpoint-dir DIR]
                          [--quantize int8|int8-dynamic] [--compile-decoder]
                          [--takes N]

Nothing is downloaded. A random `CsmForConditionalGeneration` with CSM-1B's shapes (or, with
--small, tiny ones for CI) is saved with `save_pretrained`, and both sides load those files: ours
through `csm.loading`, transformers through `from_pretrained`. So both run the same weights.

Each model lives in its own worker process, so their peak memories are measured apart (CPU: peak
RSS, reset after loading; CUDA: `max_memory_allocated`, reset after loading). The parent asks the
two workers in turn and swaps who goes first every repeat, so a noisy machine hits both alike; the
figures are medians over the repeats.

Batch 1, one prompt for both: two 10-second context clips with their transcripts, then the target
text (312 frames). Measured:
- decode speed: frames/s after the first frame (the prefill is timed apart), real-time factor;
- time to first audio: prefill + the generator's first chunk of frames (csm.generator.FIRST_CHUNK_FRAMES)
  + Mimi decoding of them, on both sides; transformers also with 2 frames (this bench's figure for it
  until the first chunk became one frame) for comparison with earlier runs;
- memory: the peak, the weights' and the KV cache's bytes.

`--quantize int8` adds a third worker, ours with int8 weights (csm.quantize) and activations in
--dtype, and its Mimi's transformers in int8 where that pays (csm.quantize.codec_int8_pays), measured
in the same rotation, and its ratios to ours in --dtype. Before the speed runs, a child process
measures how far int8 moves the outputs (bench.accuracy: per-layer SNR, codebook-0 logit error,
agreement of greedy codes over 50 frames, and the codec's SNR one-shot and streamed). `--quantize int8-dynamic` does the
same for int8 weights with int8 activations in the products after a norm (CPU with VNNI); the JSON
keeps the names `ours_int8` and `int8_over_ours_*` for either, and `settings.quantize` says which.

`--compile-decoder` adds a worker, ours with the depth decoder's step compiled by inductor
(`load_model(..., compile_decoder=True)`, csm.compiling; CPU, float weights), in the same rotation: its
ratios to transformers are `compiled_over_transformers_*`, to ours eager `compiled_over_ours_*`, its
figures `ours_compiled` (with `compiled_decoder`: false if compiling failed and it fell back to eager).

`--takes N` measures something else: ours alone, one generation of N takes of the turn against one
take, in one worker, alternating (who goes first swaps every repeat). Each run is the generator's
whole pass from a cold cache (`Generator.stream_parts`: the prompt prefilled once, --frames frames
per take, every take's audio decoded by Mimi), timed to take 0's first chunk and to the end. The
ratios are N takes' times over 1 take's (`takes4_over_1_time` for N = 4).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from itertools import pairwise
from pathlib import Path

import torch

from csm.generator import FIRST_CHUNK_FRAMES
from csm.inputs import MAX_TAKES
from csm.quantize import QUANTIZE_CHOICES, refuse_quantize_here

REPO = Path(__file__).resolve().parents[1]
FRAME_SECONDS = 0.08  # Mimi: 12.5 frames per second
FIRST_AUDIO_FRAMES = FIRST_CHUNK_FRAMES  # the generator's first chunk
PEER_FIRST_AUDIO_FRAMES_BEFORE = 2  # transformers' first audio as this bench measured it while our first chunk was 2
TEMPERATURE, TOPK = 0.9, 50
MARKER = "bench_checkpoint.json"  # says which shapes and seed a checkpoint folder holds

# The prompt: two context clips (transcript, 10 s of audio, the all-zero end-of-clip frame), then the target text.
CONTEXT_CLIPS, CLIP_TEXT_TOKENS, CLIP_AUDIO_FRAMES, TARGET_TEXT_TOKENS = 2, 20, 125, 20
CODEBOOK_SIZE = 2048  # Mimi's codes; the model's audio vocab has 3 more

LLAMA3_ROPE = dict(
    rope_type="llama3", rope_theta=500_000.0, factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
    original_max_position_embeddings=8192,
)  # fmt: skip

# sesame/csm-1b: a Llama-3.2-1B backbone and a 4-layer 1024-wide depth decoder over 32 codebooks.
REAL_SHAPES = dict(
    num_codebooks=32, vocab_size=2051, text_vocab_size=128_256,
    hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
    decoder=dict(hidden_size=1024, intermediate_size=8192, num_hidden_layers=4, num_attention_heads=8,
                 num_key_value_heads=2),
)  # fmt: skip
# For CI: the same loop (32 codebooks, same prompt length), tiny matrices.
SMALL_SHAPES = dict(
    num_codebooks=32, vocab_size=2051, text_vocab_size=1024,
    hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    decoder=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),
)  # fmt: skip


def shapes_for(small: bool) -> dict:
    return SMALL_SHAPES if small else REAL_SHAPES


# ---------------------------------------------------------------------------------------------
# The random checkpoint


def csm_config(small: bool):
    from transformers import CsmConfig

    s = shapes_for(small)
    d = s["decoder"]
    if small:
        from csm.tiny import build_tiny_mimi_config

        codec = build_tiny_mimi_config(s["num_codebooks"])
    else:
        codec = {}  # the default MimiConfig: Mimi's real shapes (~80M parameters)
    special = s["text_vocab_size"] - 256  # Llama-3 keeps its special tokens at the end: 128000 is <bos>
    return CsmConfig(
        num_codebooks=s["num_codebooks"], vocab_size=s["vocab_size"], text_vocab_size=s["text_vocab_size"],
        hidden_size=s["hidden_size"], intermediate_size=s["intermediate_size"],
        num_hidden_layers=s["num_hidden_layers"], num_attention_heads=s["num_attention_heads"],
        num_key_value_heads=s["num_key_value_heads"], head_dim=s["hidden_size"] // s["num_attention_heads"],
        max_position_embeddings=2048, rope_parameters=dict(LLAMA3_ROPE),
        bos_token_id=special, pad_token_id=special + 2, audio_token_id=special + 2, audio_eos_token_id=special + 3,
        codebook_pad_token_id=s["vocab_size"] - 1, codebook_eos_token_id=0, tie_codebooks_embeddings=True,
        depth_decoder_config=dict(
            num_codebooks=s["num_codebooks"], backbone_hidden_size=s["hidden_size"], vocab_size=s["vocab_size"],
            hidden_size=d["hidden_size"], intermediate_size=d["intermediate_size"],
            num_hidden_layers=d["num_hidden_layers"], num_attention_heads=d["num_attention_heads"],
            num_key_value_heads=d["num_key_value_heads"], head_dim=d["hidden_size"] // d["num_attention_heads"],
            max_position_embeddings=s["num_codebooks"], rope_parameters=dict(LLAMA3_ROPE),
        ),
        codec_config=codec,
    )  # fmt: skip


def build_checkpoint(folder: Path, small: bool, seed: int) -> None:
    """Save a random CsmForConditionalGeneration (transformers' own init) into `folder`."""
    from transformers import CsmForConditionalGeneration

    torch.manual_seed(seed)
    model = CsmForConditionalGeneration(csm_config(small)).eval()
    model.save_pretrained(folder)
    (folder / MARKER).write_text(json.dumps({"small": small, "seed": seed}))


def ensure_checkpoint(folder: Path, small: bool, seed: int) -> None:
    """Reuse `folder` if it holds these shapes and seed; otherwise build it in a child process.

    A child, so that the ~6 GB the build allocates is surely given back before the workers start.
    """
    marker = folder / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == {"small": small, "seed": seed}:
        return
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "bench.bench", "--build-checkpoint", str(folder), "--seed", str(seed)]
    subprocess.run(command + (["--small"] if small else []), cwd=REPO, check=True)


# ---------------------------------------------------------------------------------------------
# The prompt


def prompt_parts(num_codebooks: int, text_vocab_size: int, seed: int) -> list[tuple[str, torch.Tensor]]:
    """("text", ids [T]) and ("audio", codes [F, N]) parts, in prompt order."""
    g = torch.Generator().manual_seed(seed)
    parts = []
    for _ in range(CONTEXT_CLIPS):
        parts.append(("text", torch.randint(0, text_vocab_size - 256, (CLIP_TEXT_TOKENS,), generator=g)))
        codes = torch.randint(0, CODEBOOK_SIZE, (CLIP_AUDIO_FRAMES, num_codebooks), generator=g)
        parts.append(("audio", torch.cat([codes, torch.zeros_like(codes[:1])])))  # + the end-of-clip frame
    parts.append(("text", torch.randint(0, text_vocab_size - 256, (TARGET_TEXT_TOKENS,), generator=g)))
    return parts


def our_frames(parts, num_codebooks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Our frame layout: [1, S, N + 1] tokens and the mask of the present columns."""
    tokens, masks = [], []
    for kind, value in parts:
        frames = torch.zeros(len(value), num_codebooks + 1, dtype=torch.long)
        mask = torch.zeros_like(frames, dtype=torch.bool)
        if kind == "text":
            frames[:, -1], mask[:, -1] = value, True
        else:
            frames[:, :-1], mask[:, :-1] = value, True
        tokens.append(frames)
        masks.append(mask)
    return torch.cat(tokens)[None], torch.cat(masks)[None]


# ---------------------------------------------------------------------------------------------
# Measuring


def synced_clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def proc_status_bytes(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE).group(1)) * 1024


def reset_peak_memory(device: torch.device) -> bool:
    """Start a fresh peak. On CPU, writing 5 to clear_refs resets the peak RSS (Linux >= 4.0)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False  # then the peak includes the loading


def memory_figures(device: torch.device) -> dict:
    if device.type == "cuda":
        return dict(
            peak_bytes=torch.cuda.max_memory_allocated(device),
            peak_reserved_bytes=torch.cuda.max_memory_reserved(device),
            allocated_bytes=torch.cuda.memory_allocated(device),
        )
    return dict(
        peak_bytes=proc_status_bytes("VmHWM"),
        rss_bytes=proc_status_bytes("VmRSS"),
        # RSS counts pages of memory-mapped weight files once read (clean page cache, reclaimable).
        rss_anon_bytes=proc_status_bytes("RssAnon"),
        rss_file_bytes=proc_status_bytes("RssFile"),
        process_peak_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # loading included
    )


def tensor_bytes(tensors) -> int:
    seen = {}
    for t in tensors:
        seen[t.data_ptr()] = t.numel() * t.element_size()  # tied weights count once
    return sum(seen.values())


def weight_bytes(module: torch.nn.Module) -> int:
    """The bytes of a module's weights, counting our oneDNN-packed Linears (CPU) and int8 Linears and
    embeddings (buffers)."""
    from csm.packing import PackedLinear
    from csm.quantize import DynamicInt8Linear, Int8Embedding, Int8Linear

    int8_modules = (Int8Linear, Int8Embedding)
    int8 = [t for m in module.modules() if isinstance(m, int8_modules) for t in (m.weight, m.scales)]
    packed = sum(m.nbytes for m in module.modules() if isinstance(m, (PackedLinear, DynamicInt8Linear)))
    return tensor_bytes([*module.parameters(), *int8]) + packed


def kv_cache_bytes(layers: int, kv_heads: int, head_dim: int, positions: int, dtype: torch.dtype) -> int:
    return 2 * layers * kv_heads * head_dim * positions * dtype.itemsize


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    return f"{model.group(1).strip() if model else 'unknown CPU'} ({os.cpu_count()} cores)"


# ---------------------------------------------------------------------------------------------
# The two sides. Each generates `count` frames after the prompt and says when what was ready.


class OursRunner:
    """Our Model, its production decode step (csm.frame_step: a CUDA graph on CUDA) and streaming Mimi."""

    quantize: str | None = None
    compile_decoder = False

    def __init__(self, folder: str, device: torch.device, dtype: torch.dtype, prompt_seed: int):
        from csm import loading
        from csm.codec import load_codec
        from csm.frame_step import FrameStep

        checkpoint = loading.resolve_checkpoint(folder)
        self.model = loading.load_model(checkpoint, device=device, dtype=dtype, quantize=self.quantize,
                                        compile_decoder=self.compile_decoder)  # fmt: skip
        self.model.setup_caches(1)
        self.step = FrameStep(self.model)
        codec_config, codec_state = loading.codec_weights(checkpoint)
        self.codec = load_codec(None, self.model.num_codebooks, device=device, codec_config=codec_config,
                                codec_state_dict=codec_state, quantize=self.quantize)  # fmt: skip
        self.device = device
        n = self.model.num_codebooks
        parts = prompt_parts(n, self.model.config.text_vocab_size, prompt_seed)
        tokens, mask = our_frames(parts, n)
        self.tokens, self.mask = tokens.to(device), mask.to(device)
        self.prompt_len = tokens.shape[1]

    def sizes(self, frames: int) -> dict:
        from csm.compiling import decoder_is_compiled

        caches = [layer.attn.kv_cache for stack in (self.model.backbone, self.model.decoder) for layer in stack.layers]
        return dict(
            compiled_decoder=decoder_is_compiled(self.model),  # False after a fallback to eager too
            weights_bytes=weight_bytes(self.model),
            codec_weights_bytes=weight_bytes(self.codec.model),  # int8 mode: Mimi's transformers too
            # Static: all max_seq_len slots are allocated up front, whatever the length.
            kv_cache_bytes=sum(c.k.nbytes + c.v.nbytes for c in caches),
        )

    @torch.inference_mode()
    def generate(self, count: int, seed: int, context_cached: bool = False) -> tuple[torch.Tensor, float, list[float]]:
        """Prefill + `count` frames: (codes [count, N], start time, the time each frame was ready).

        `context_cached`: the cache already holds the context clips, as the generator's does when a
        request's clips recur (preset voices, a growing conversation): only the target text is prefilled.
        """
        model = self.model
        torch.manual_seed(seed)
        self.step.prepare(TEMPERATURE, TOPK)  # captures the CUDA graph the first time (in the warm-up)
        held = self.prompt_len - TARGET_TEXT_TOKENS if context_cached else 0
        if held:  # an earlier request's work: not timed
            model.backbone_hidden(
                self.tokens[:, :held], self.mask[:, :held], torch.arange(held, device=self.device)[None]
            )
        start = synced_clock(self.device)
        if not held:
            model.reset_caches()
        positions = torch.arange(held, self.prompt_len, device=self.device)[None]
        frame = model.generate_frame(self.tokens[:, held:], self.mask[:, held:], positions, TEMPERATURE, TOPK)
        frames, times = [frame], [synced_clock(self.device)]
        for i in range(1, count):
            position = torch.full((1, 1), self.prompt_len + i - 1, device=self.device)
            frame = self.step(frame, position, TEMPERATURE, TOPK)
            frames.append(frame)
            # The generator itself waits on the device once per chunk; one sync per frame costs
            # microseconds against a frame's milliseconds, and transformers syncs every frame too.
            times.append(synced_clock(self.device))
        return torch.cat(frames), start, times

    def decode_audio(self, codes: torch.Tensor) -> torch.Tensor:
        """The first chunk of a stream, as the generator decodes it."""
        codes = codes.T.clamp(max=self.codec.codebook_size - 1)  # random weights may sample the 3 extra ids
        return self.codec.stream_decoder().decode(codes).cpu()


class FrameClock:
    """A transformers streamer that notes when each generated frame arrives (put() gets it on the host)."""

    def __init__(self):
        self.times: list[float] = []

    def put(self, value: torch.Tensor) -> None:
        if value.numel():  # the first put is the (empty, as we pass embeddings) prompt
            self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


class TransformersRunner:
    """transformers' CsmForConditionalGeneration.generate, fed the same prompt as embeddings."""

    def __init__(self, folder: str, device: torch.device, dtype: torch.dtype, prompt_seed: int):
        from transformers import CsmForConditionalGeneration

        self.model = CsmForConditionalGeneration.from_pretrained(folder, dtype=dtype).to(device).eval()
        self.device = device
        config = self.model.config
        parts = prompt_parts(config.num_codebooks, config.text_vocab_size, prompt_seed)
        self.parts = [(kind, value.to(device)) for kind, value in parts]
        self.prompt_len = sum(len(v) for _, v in self.parts)
        self.sampling = dict(
            do_sample=True, top_k=TOPK, temperature=TEMPERATURE,
            depth_decoder_do_sample=True, depth_decoder_top_k=TOPK, depth_decoder_temperature=TEMPERATURE,
        )  # fmt: skip

    def sizes(self, frames: int) -> dict:
        named = list(self.model.named_parameters(remove_duplicate=False))
        config, decoder = self.model.config, self.model.config.depth_decoder_config
        dtype = self.model.dtype
        return dict(
            weights_bytes=tensor_bytes(p for n, p in named if not n.startswith("codec_model.")),
            codec_weights_bytes=tensor_bytes(p for n, p in named if n.startswith("codec_model.")),
            # Dynamic: grows with the sequence; this is its size at the end of a decode run.
            kv_cache_bytes=kv_cache_bytes(config.num_hidden_layers, config.num_key_value_heads, config.head_dim,
                                          self.prompt_len + frames, dtype)
            + kv_cache_bytes(decoder.num_hidden_layers, decoder.num_key_value_heads, decoder.head_dim,
                             config.num_codebooks, dtype),
        )  # fmt: skip

    def embeddings(self) -> torch.Tensor:
        """The prompt embedded as transformers' CSM embeds it: text table, or the sum over codebooks."""
        model = self.model
        embeds = [
            model.embed_text_tokens(v) if kind == "text" else model.backbone_model.embed_tokens(v[None])[0]
            for kind, v in self.parts
        ]
        return torch.cat(embeds)[None]

    @torch.no_grad()
    def generate(self, count: int, seed: int) -> tuple[torch.Tensor, float, list[float]]:
        torch.manual_seed(seed)
        clock = FrameClock()
        start = synced_clock(self.device)
        embeds = self.embeddings()
        codes = self.model.generate(inputs_embeds=embeds, max_new_tokens=count, streamer=clock, **self.sampling)[0]
        if len(clock.times) != codes.shape[0]:
            raise RuntimeError(f"the streamer saw {len(clock.times)} frames, generate returned {codes.shape[0]}")
        return codes, start, clock.times

    @torch.no_grad()
    def decode_audio(self, codes: torch.Tensor) -> torch.Tensor:
        codes = codes.T[None].clamp(max=self.model.codec_model.config.codebook_size - 1)
        return self.model.codec_model.decode(codes).audio_values[0, 0].cpu()


class OursInt8Runner(OursRunner):
    """Ours with int8 weights (`load_model(..., quantize="int8")`), activations in the same dtype."""

    quantize = "int8"


class OursInt8DynamicRunner(OursRunner):
    """Ours with int8 weights and, for the products after a norm, int8 activations (`quantize="int8-dynamic"`)."""

    quantize = "int8-dynamic"


class OursCompiledRunner(OursRunner):
    """Ours with the depth decoder's step compiled by inductor (`load_model(..., compile_decoder=True)`)."""

    compile_decoder = True


class OursTakesRunner(OursRunner):
    """Ours through csm.generator's whole pass (`Generator.stream_parts`): one prefill, N takes, Mimi for each."""

    def __init__(self, folder: str, device: torch.device, dtype: torch.dtype, prompt_seed: int):
        from csm.generator import Generator, PromptPart

        super().__init__(folder, device, dtype, prompt_seed)
        self.generator = Generator(self.model, None, self.codec)  # the prompt is token ids already: no tokenizer
        n = self.model.num_codebooks
        parts = prompt_parts(n, self.model.config.text_vocab_size, prompt_seed)
        # As the generator splits a prompt: each context clip (its text, then its audio), then the target text.
        groups = [parts[i : i + 2] for i in range(0, 2 * CONTEXT_CLIPS, 2)] + [parts[2 * CONTEXT_CLIPS :]]
        keys = [("bench clip", i) for i in range(CONTEXT_CLIPS)] + [None]
        self.parts = [
            PromptPart(key, *(t[0].to(device) for t in our_frames(group, n))) for key, group in zip(keys, groups)
        ]

    def generate_takes(self, takes: int, count: int, seed: int) -> dict:
        from csm.generator import GenerationInfo, TakeInfo

        self.model.reset_caches()  # cold, as a conversation's first request: nothing of the last run is reused
        info = GenerationInfo(seed=seed, takes=[TakeInfo() for _ in range(takes)])
        start, first = synced_clock(self.device), None
        for _ in self.generator.stream_parts(self.parts, count, TEMPERATURE, TOPK, info):
            first = first or time.perf_counter()  # chunks arrive on the host: nothing is pending
        done = time.perf_counter()
        return dict(
            takes=takes, frames=[t.frames for t in info.takes], audio_samples=[t.audio.numel() for t in info.takes],
            seconds=done - start, first_audio_seconds=first - start, after_first_audio_seconds=done - first,
        )  # fmt: skip


RUNNERS = {
    "ours": OursRunner, "transformers": TransformersRunner, "ours-int8": OursInt8Runner,
    "ours-int8-dynamic": OursInt8DynamicRunner, "ours-takes": OursTakesRunner, "ours-compiled": OursCompiledRunner,
}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The worker process: one runner, answering requests (one JSON line each) from the parent.


class Worker:
    def __init__(self, runner, device: torch.device):
        self.runner, self.device = runner, device
        self.frames_decoded = 0

    def decode(self, frames: int, seed: int) -> dict:
        load = os.getloadavg()[0]  # other work on the machine shows here: keep it with the figures
        codes, start, times = self.runner.generate(frames, seed)
        self.frames_decoded = max(self.frames_decoded, codes.shape[0])
        return dict(
            frames=codes.shape[0], prefill_seconds=times[0] - start, decode_seconds=times[-1] - times[0],
            frame_seconds=[b - a for a, b in pairwise(times)], load_average=load,
        )  # fmt: skip

    def first_audio(self, seed: int, context_cached: bool = False, frames: int = FIRST_AUDIO_FRAMES) -> dict:
        load = os.getloadavg()[0]
        codes, start, times = self.runner.generate(frames, seed, **({"context_cached": True} if context_cached else {}))
        first, last = times[0], times[-1]
        audio = self.runner.decode_audio(codes)
        done = time.perf_counter()  # decode_audio returns the samples on the host: nothing is pending
        return dict(
            frames=codes.shape[0], seconds=done - start, prefill_and_first_frame_seconds=first - start,
            later_frames_seconds=last - first, codec_seconds=done - last, audio_samples=audio.numel(),
            load_average=load,
        )  # fmt: skip

    def takes(self, takes: int, frames: int, seed: int) -> dict:
        load = os.getloadavg()[0]
        result = self.runner.generate_takes(takes, frames, seed)
        self.frames_decoded = max(self.frames_decoded, *result["frames"])
        return {**result, "load_average": load}

    def memory(self) -> dict:
        return {**memory_figures(self.device), **self.runner.sizes(self.frames_decoded)}


WORKER_OPS = ("decode", "first_audio", "takes", "memory")


def serve(name: str, folder: str, device: str, dtype: str, prompt_seed: int) -> None:
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything else printed (warnings, progress) goes to the log, not into the replies
    device = torch.device(device)
    baseline = memory_figures(device)
    started = time.perf_counter()
    runner = RUNNERS[name](folder, device, getattr(torch, dtype), prompt_seed)
    load_seconds = time.perf_counter() - started
    memory_after_load = memory_figures(device)
    peak_reset = reset_peak_memory(device)
    worker = Worker(runner, device)
    replies.write(json.dumps(dict(
        device=device_name(device), threads=torch.get_num_threads(), load_seconds=load_seconds,
        prompt_frames=runner.prompt_len, baseline=baseline, after_load=memory_after_load,
        peak_excludes_loading=peak_reset,
    )) + "\n")  # fmt: skip
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] not in WORKER_OPS:
            break  # "quit"
        try:
            reply = getattr(worker, request["op"])(**request.get("args", {}))
        except Exception:
            reply = {"error": traceback.format_exc()}
        replies.write(json.dumps(reply) + "\n")


class WorkerProcess:
    """The parent's handle on one worker."""

    def __init__(self, name: str, folder: Path, device: str, dtype: str, prompt_seed: int, log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"worker-{name}.log"
        command = [sys.executable, "-m", "bench.bench", "--worker", name, "--checkpoint-dir", str(folder),
                   "--device", device, "--dtype", dtype, "--seed", str(prompt_seed)]  # fmt: skip
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(command, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=log, text=True)  # fmt: skip

    def read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            raise RuntimeError(f"the {self.name} worker died (exit {self.process.returncode}):\n{self.log_tail()}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"the {self.name} worker failed:\n{reply['error']}")
        return reply

    def call(self, op: str, **args) -> dict:
        self.process.stdin.write(json.dumps({"op": op, "args": args}) + "\n")
        self.process.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write('{"op": "quit"}\n')
                self.process.stdin.close()
                self.process.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


# ---------------------------------------------------------------------------------------------
# The parent: schedule, summarise, report


def measure(folder: Path, args, log_dir: Path) -> tuple[dict, str]:
    """Every worker's summary, and the device's name (as a worker sees it)."""
    names = ["ours", "transformers", *([f"ours-{args.quantize}"] if args.quantize else []),
             *(["ours-compiled"] if args.compile_decoder else [])]  # fmt: skip
    workers, ready = {}, {}
    try:
        for name in names:  # one load at a time: at once, their peaks could exhaust a small machine's memory
            workers[name] = WorkerProcess(name, folder, args.device, args.dtype, args.seed, log_dir)
            ready[name] = workers[name].read()
        print("loaded: " + ", ".join(f"{n} {r['load_seconds']:.1f} s" for n, r in ready.items()), file=sys.stderr)
        for w in workers.values():  # warm-up: first-call allocations, kernel selection, CUDA graph capture
            w.call("decode", frames=min(3, args.frames), seed=args.seed)
            w.call("first_audio", seed=args.seed)
        runs = {name: dict(decode=[], first_audio=[]) for name in names}
        ours = [name for name in names if name.startswith("ours")]  # transformers' generate has no context reuse
        for name in ours:
            runs[name]["first_audio_context_cached"] = []
        for repeat in range(args.repeats):
            order = names if repeat % 2 == 0 else names[::-1]  # who goes first alternates
            for op, kwargs in (("decode", dict(frames=args.frames)), ("first_audio", {})):
                for name in order:
                    result = workers[name].call(op, seed=args.seed + repeat, **kwargs)
                    runs[name][op].append(result)
                    print(f"repeat {repeat + 1}/{args.repeats} {name} {op}: {brief(result)}", file=sys.stderr)
            for name in ours:
                result = workers[name].call("first_audio", seed=args.seed + repeat, context_cached=True)
                runs[name]["first_audio_context_cached"].append(result)
                print(f"repeat {repeat + 1}/{args.repeats} {name} first_audio, context cached: {brief(result)}",
                      file=sys.stderr)  # fmt: skip
            if PEER_FIRST_AUDIO_FRAMES_BEFORE != FIRST_AUDIO_FRAMES:
                frames = PEER_FIRST_AUDIO_FRAMES_BEFORE
                result = workers["transformers"].call("first_audio", seed=args.seed + repeat, frames=frames)
                runs["transformers"].setdefault("first_audio_frames_before", []).append(result)
                print(f"repeat {repeat + 1}/{args.repeats} transformers first_audio, {frames} frames: {brief(result)}",
                      file=sys.stderr)  # fmt: skip
        memory = {name: w.call("memory") for name, w in workers.items()}
    finally:
        for w in workers.values():
            w.close()
    return {name: summarize(runs[name], ready[name], memory[name]) for name in names}, ready["ours"]["device"]


def brief(result: dict) -> str:
    if "decode_seconds" in result:
        return f"{result['frames']} frames, {(result['frames'] - 1) / result['decode_seconds']:.2f} frames/s"
    return f"{result['seconds']:.2f} s to first audio"


def summarize(runs: dict, ready: dict, memory: dict) -> dict:
    decode, first_audio = runs["decode"], runs["first_audio"]
    fps = statistics.median((r["frames"] - 1) / r["decode_seconds"] for r in decode)

    def median(key: str, rs: list[dict]) -> float:
        return statistics.median(r[key] for r in rs)

    footprint = memory["weights_bytes"] + memory["codec_weights_bytes"] + memory["kv_cache_bytes"]
    # Other work on a shared machine only ever adds time: the median frame is steadier than a run's
    # mean, and the fastest frame (and fastest first audio) is the closest to the code's own speed.
    frame_times = [t for r in decode for t in r["frame_seconds"]]
    median_frame = statistics.median(frame_times)
    return dict(
        frames_per_second=fps,
        real_time_factor=1 / (fps * FRAME_SECONDS),  # decode wall time / audio duration
        median_frame_seconds=median_frame,
        frames_per_second_from_median_frame=1 / median_frame,
        fastest_frame_seconds=min(frame_times),
        frames_per_second_from_fastest_frame=1 / min(frame_times),
        real_time_factor_with_prefill=statistics.median(
            (r["prefill_seconds"] + r["decode_seconds"]) / (r["frames"] * FRAME_SECONDS) for r in decode
        ),
        frames_generated=[r["frames"] for r in decode],
        prefill_seconds=median("prefill_seconds", decode),
        time_to_first_audio_seconds=median("seconds", first_audio),
        time_to_first_audio_best_seconds=min(r["seconds"] for r in first_audio),
        time_to_first_audio_parts=dict(
            prefill_and_first_frame_seconds=median("prefill_and_first_frame_seconds", first_audio),
            later_frames_seconds=median("later_frames_seconds", first_audio),
            codec_seconds=median("codec_seconds", first_audio),
        ),
        first_audio_frames=[r["frames"] for r in first_audio],
        **(
            dict(time_to_first_audio_context_cached_seconds=median("seconds", runs["first_audio_context_cached"]))
            if runs.get("first_audio_context_cached")
            else {}
        ),
        **(
            dict(time_to_first_audio_frames_before_seconds=median("seconds", runs["first_audio_frames_before"]))
            if runs.get("first_audio_frames_before")
            else {}
        ),
        peak_memory_bytes=memory["peak_bytes"],
        weights_bytes=memory["weights_bytes"],
        codec_weights_bytes=memory["codec_weights_bytes"],
        kv_cache_bytes=memory["kv_cache_bytes"],
        peak_over_weights_codec_kv=memory["peak_bytes"] / footprint,
        memory=memory,
        load_seconds=ready["load_seconds"],
        threads=ready["threads"],
        memory_before_loading=ready["baseline"],
        memory_after_loading=ready["after_load"],
        peak_excludes_loading=ready["peak_excludes_loading"],
        runs=runs,
    )


def report(args, results: dict, device: str, accuracy: dict | None = None) -> dict:
    import transformers

    ours, theirs = results["ours"], results["transformers"]
    settings = dict(
        dtype=args.dtype, frames=args.frames, repeats=args.repeats, small=args.small, seed=args.seed,
        temperature=TEMPERATURE, topk=TOPK, batch_size=1, prompt_frames=prompt_length(),
        first_audio_frames=FIRST_AUDIO_FRAMES, frame_seconds=FRAME_SECONDS, quantize=args.quantize,
        compile_decoder=args.compile_decoder,
    )  # fmt: skip
    data = dict(
        device=device,
        device_type=args.device,
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        torch_version=torch.__version__,
        transformers_version=transformers.__version__,
        python_version=sys.version.split()[0],
        command="python -m bench.bench " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        settings=settings,
        shapes=shapes_for(args.small),
        ours=ours,
        transformers=theirs,
        ratios=side_ratios(ours, theirs),  # ours / transformers: above 1 is better for fps, below 1 for the others
    )
    if "time_to_first_audio_frames_before_seconds" in theirs:  # against transformers' figure of earlier runs
        before = ours["time_to_first_audio_seconds"] / theirs["time_to_first_audio_frames_before_seconds"]
        data["ratios"]["time_to_first_audio_against_transformers_frames_before"] = before
    if args.quantize:  # the quantized side is "ours_int8" in the JSON whichever scheme (settings.quantize says)
        int8 = data["ours_int8"] = results[f"ours-{args.quantize}"]
        data["ratios"].update({f"int8_over_ours_{key}": value for key, value in side_ratios(int8, ours).items()})
        data["accuracy"] = accuracy
    if args.compile_decoder:  # ours with the decoder step compiled, against transformers and against ours eager
        compiled = data["ours_compiled"] = results["ours-compiled"]
        compiled["compiled_decoder"] = compiled["memory"]["compiled_decoder"]
        data["ratios"].update({f"compiled_over_transformers_{k}": v for k, v in side_ratios(compiled, theirs).items()})
        data["ratios"].update({f"compiled_over_ours_{k}": v for k, v in side_ratios(compiled, ours).items()})
    return data


def side_ratios(one: dict, other: dict) -> dict:
    def ratio(key: str) -> float:
        return one[key] / other[key]

    return dict(
        frames_per_second=ratio("frames_per_second"),
        frames_per_second_from_median_frame=ratio("frames_per_second_from_median_frame"),
        frames_per_second_from_fastest_frame=ratio("frames_per_second_from_fastest_frame"),
        time_to_first_audio=ratio("time_to_first_audio_seconds"),
        time_to_first_audio_best=ratio("time_to_first_audio_best_seconds"),
        peak_memory=ratio("peak_memory_bytes"),
    )


# ---------------------------------------------------------------------------------------------
# --takes N: ours alone, N takes of a turn in one pass against 1 take


def measure_takes(folder: Path, args, log_dir: Path) -> tuple[dict, dict, dict]:
    """Runs of 1 and of N takes, alternating in one worker; its ready message and its memory."""
    worker = WorkerProcess("ours-takes", folder, args.device, args.dtype, args.seed, log_dir)
    counts = (1, args.takes)
    try:
        ready = worker.read()
        print(f"loaded: ours {ready['load_seconds']:.1f} s", file=sys.stderr)
        for takes in counts:  # warm-up: the caches' rows for N takes, kernel selection, a CUDA graph per count
            worker.call("takes", takes=takes, frames=min(3, args.frames), seed=args.seed)
        runs = {takes: [] for takes in counts}
        for repeat in range(args.repeats):
            for takes in counts if repeat % 2 == 0 else counts[::-1]:  # who goes first alternates
                result = worker.call("takes", takes=takes, frames=args.frames, seed=args.seed + repeat)
                runs[takes].append(result)
                print(f"repeat {repeat + 1}/{args.repeats} {takes} take(s): {result['seconds']:.2f} s, first audio "
                      f"{result['first_audio_seconds']:.2f} s, frames {result['frames']}", file=sys.stderr)  # fmt: skip
        memory = worker.call("memory")
    finally:
        worker.close()
    return runs, ready, memory


def summarize_takes(runs: list[dict]) -> dict:
    def median(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    return dict(
        seconds=median("seconds"),  # the whole pass: prefill, every frame, every take's Mimi decoding
        best_seconds=min(r["seconds"] for r in runs),
        first_audio_seconds=median("first_audio_seconds"),  # prefill + take 0's first chunk
        after_first_audio_seconds=median("after_first_audio_seconds"),  # the frames after it, and Mimi
        frames=[r["frames"] for r in runs],
        audio_samples=[r["audio_samples"] for r in runs],
        runs=runs,
    )


def takes_report(args, runs: dict, ready: dict, memory: dict) -> dict:
    summaries = {str(takes): summarize_takes(rs) for takes, rs in runs.items()}
    one, many = summaries["1"], summaries[str(args.takes)]
    name = f"takes{args.takes}_over_1"
    settings = dict(
        dtype=args.dtype, frames=args.frames, repeats=args.repeats, small=args.small, seed=args.seed,
        temperature=TEMPERATURE, topk=TOPK, takes=args.takes, prompt_frames=prompt_length(),
        first_audio_frames=FIRST_AUDIO_FRAMES, frame_seconds=FRAME_SECONDS, cache="cold (every run prefills the prompt)",
    )  # fmt: skip
    return dict(
        device=ready["device"], device_type=args.device,
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"), torch_version=torch.__version__,
        python_version=sys.version.split()[0],
        command="python -m bench.bench " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        settings=settings, shapes=shapes_for(args.small), takes=summaries,
        ratios={
            f"{name}_time": many["seconds"] / one["seconds"],
            f"{name}_time_best": many["best_seconds"] / one["best_seconds"],
            f"{name}_time_after_first_audio": many["after_first_audio_seconds"] / one["after_first_audio_seconds"],
            f"{name}_first_audio": many["first_audio_seconds"] / one["first_audio_seconds"],
        },
        memory=memory, peak_memory_bytes=memory["peak_bytes"], load_seconds=ready["load_seconds"],
        threads=ready["threads"], peak_excludes_loading=ready["peak_excludes_loading"],
    )  # fmt: skip


def print_takes_table(data: dict) -> None:
    s, n = data["settings"], data["settings"]["takes"]
    one, many, r = data["takes"]["1"], data["takes"][str(n)], data["ratios"]

    def row(label: str, key: str, ratio: str | None) -> tuple[str, ...]:
        return label, f"{one[key]:.3f}", f"{many[key]:.3f}", f"{r[f'takes{n}_over_1_{ratio}']:.2f}x" if ratio else ""

    print(f"\n{'small' if s['small'] else 'CSM-1B'} shapes, {data['device_type']} {s['dtype']}, {data['device']}, "
          f"{s['frames']} frames x {s['repeats']} repeats (medians), torch {data['torch_version']}: "
          f"ours, {n} takes in one pass against 1 take")  # fmt: skip
    print_rows(("", "1 take", f"{n} takes", f"{n} / 1"), [
        row("whole pass s (prefill, frames, every take's Mimi)", "seconds", "time"),
        row("whole pass, best run s", "best_seconds", "time_best"),
        row(f"prefill ({s['prompt_frames']} frames) + first chunk s", "first_audio_seconds", "first_audio"),
        row("after the first chunk s", "after_first_audio_seconds", "time_after_first_audio"),
    ])  # fmt: skip
    print(f"peak memory {gb(data['peak_memory_bytes'])} GB")


def measure_accuracy(folder: Path, args, scratch: Path) -> dict:
    """bench.accuracy in a child process: both models at once, away from the speed workers' memory."""
    out = scratch / "accuracy.json"
    command = [sys.executable, "-m", "bench.accuracy", "--checkpoint-dir", str(folder), "--device", args.device,
               "--dtype", args.dtype, "--quantize", args.quantize, "--frames", str(args.accuracy_frames),
               "--seed", str(args.seed), "--json", str(out)] + (["--small"] if args.small else [])  # fmt: skip
    subprocess.run(command, cwd=REPO, check=True)
    return json.loads(out.read_text())


def prompt_length() -> int:
    return CONTEXT_CLIPS * (CLIP_TEXT_TOKENS + CLIP_AUDIO_FRAMES + 1) + TARGET_TEXT_TOKENS


def gb(nbytes: int) -> str:
    return f"{nbytes / 1e9:.3f}"


def print_rows(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print(f"{row[0]:<{widths[0]}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(row[1:], widths[1:])))


def print_table(data: dict) -> None:
    ours, theirs, r = data["ours"], data["transformers"], data["ratios"]
    rows = [
        ("decode frames/s", f"{ours['frames_per_second']:.3f}", f"{theirs['frames_per_second']:.3f}",
         f"{r['frames_per_second']:.2f}x"),
        ("decode frames/s from the median frame", f"{ours['frames_per_second_from_median_frame']:.3f}",
         f"{theirs['frames_per_second_from_median_frame']:.3f}", f"{r['frames_per_second_from_median_frame']:.2f}x"),
        ("decode frames/s from the fastest frame", f"{ours['frames_per_second_from_fastest_frame']:.3f}",
         f"{theirs['frames_per_second_from_fastest_frame']:.3f}", f"{r['frames_per_second_from_fastest_frame']:.2f}x"),
        ("real-time factor (decode)", f"{ours['real_time_factor']:.2f}", f"{theirs['real_time_factor']:.2f}", ""),
        ("real-time factor (with prefill)", f"{ours['real_time_factor_with_prefill']:.2f}",
         f"{theirs['real_time_factor_with_prefill']:.2f}", ""),
        (f"prefill + 1st frame ({data['settings']['prompt_frames']} frames) s", f"{ours['prefill_seconds']:.3f}",
         f"{theirs['prefill_seconds']:.3f}", ""),
        ("time to first audio s", f"{ours['time_to_first_audio_seconds']:.3f}",
         f"{theirs['time_to_first_audio_seconds']:.3f}", f"{r['time_to_first_audio']:.2f}x"),
        ("time to first audio, best run s", f"{ours['time_to_first_audio_best_seconds']:.3f}",
         f"{theirs['time_to_first_audio_best_seconds']:.3f}", f"{r['time_to_first_audio_best']:.2f}x"),
        (f"  of which Mimi decode ({FIRST_AUDIO_FRAMES} frames) s",
         f"{ours['time_to_first_audio_parts']['codec_seconds']:.3f}",
         f"{theirs['time_to_first_audio_parts']['codec_seconds']:.3f}", ""),
        *([(f"time to first audio, transformers at {PEER_FIRST_AUDIO_FRAMES_BEFORE} frames s",
            f"{ours['time_to_first_audio_seconds']:.3f}", f"{theirs['time_to_first_audio_frames_before_seconds']:.3f}",
            f"{r['time_to_first_audio_against_transformers_frames_before']:.2f}x")]
          if "time_to_first_audio_frames_before_seconds" in theirs else []),
        ("time to first audio, clips already cached s", f"{ours['time_to_first_audio_context_cached_seconds']:.3f}",
         "n/a", ""),
        ("peak memory GB", gb(ours["peak_memory_bytes"]), gb(theirs["peak_memory_bytes"]), f"{r['peak_memory']:.2f}x"),
        ("weights GB (CSM / Mimi)", f"{gb(ours['weights_bytes'])} / {gb(ours['codec_weights_bytes'])}",
         f"{gb(theirs['weights_bytes'])} / {gb(theirs['codec_weights_bytes'])}", ""),
        ("KV cache GB", gb(ours["kv_cache_bytes"]), gb(theirs["kv_cache_bytes"]), ""),
        ("peak / (weights + Mimi + KV)", f"{ours['peak_over_weights_codec_kv']:.2f}",
         f"{theirs['peak_over_weights_codec_kv']:.2f}", ""),
    ]  # fmt: skip
    s = data["settings"]
    print(f"\n{'small' if s['small'] else 'CSM-1B'} shapes, {data['device_type']} {s['dtype']}, {data['device']}, "
          f"{s['frames']} frames x {s['repeats']} repeats (medians), torch {data['torch_version']}, "
          f"transformers {data['transformers_version']}")  # fmt: skip
    print_rows(("", "ours", "transformers", "ours/transformers"), rows)
    if "ours_int8" in data:
        print_int8_table(data)
    if "ours_compiled" in data:
        print_compiled_table(data)


# The decode-speed rows of the tables of a side against ours: label, and the figure's key (and its ratio's).
SPEED_ROWS = (
    ("decode frames/s", "frames_per_second"),
    ("decode frames/s from the median frame", "frames_per_second_from_median_frame"),
    ("decode frames/s from the fastest frame", "frames_per_second_from_fastest_frame"),
)


def print_compiled_table(data: dict) -> None:
    """Ours with the decoder step compiled, against transformers and against ours eager, same run."""
    compiled, ours, theirs, r = data["ours_compiled"], data["ours"], data["transformers"], data["ratios"]

    def row(label: str, key: str, ratio: str | None, digits: int = 3) -> tuple[str, ...]:
        shown = [f"{side[key]:.{digits}f}" for side in (compiled, ours, theirs)]
        ratios = [f"{r[f'compiled_over_{peer}_{ratio}']:.2f}x" if ratio else "" for peer in ("ours", "transformers")]
        return label, *shown, *ratios

    rows = [
        *(row(label, key, key) for label, key in SPEED_ROWS),
        row("time to first audio s", "time_to_first_audio_seconds", "time_to_first_audio"),
        row("load s (compiling included)", "load_seconds", None, 1),
        ("peak memory GB", *(gb(side["peak_memory_bytes"]) for side in (compiled, ours, theirs)),
         f"{r['compiled_over_ours_peak_memory']:.2f}x", f"{r['compiled_over_transformers_peak_memory']:.2f}x"),
    ]  # fmt: skip
    state = "compiled" if compiled["compiled_decoder"] else "NOT compiled (it fell back to eager: see its log)"
    print(f"\nours with the depth decoder's step {state}, against ours eager and transformers, same run")
    print_rows(("", "ours compiled", "ours eager", "transformers", "compiled/ours", "compiled/transformers"), rows)


def print_int8_table(data: dict) -> None:
    """Ours with int8 weights against ours in --dtype, same run; then the accuracy figures."""
    int8, ours, r, dtype = data["ours_int8"], data["ours"], data["ratios"], data["settings"]["dtype"]

    def row(label: str, key: str, ratio: str | None, digits: int = 3) -> tuple[str, ...]:
        return label, f"{int8[key]:.{digits}f}", f"{ours[key]:.{digits}f}", f"{r[ratio]:.2f}x" if ratio else ""

    rows = [
        *(row(label, key, f"int8_over_ours_{key}") for label, key in SPEED_ROWS),
        row("real-time factor (decode)", "real_time_factor", None, 2),
        row("prefill + 1st frame s", "prefill_seconds", None),
        row("time to first audio s", "time_to_first_audio_seconds", "int8_over_ours_time_to_first_audio"),
        row("time to first audio, clips already cached s", "time_to_first_audio_context_cached_seconds", None),
        ("peak memory GB", gb(int8["peak_memory_bytes"]), gb(ours["peak_memory_bytes"]),
         f"{r['int8_over_ours_peak_memory']:.2f}x"),
        ("weights GB (CSM)", gb(int8["weights_bytes"]), gb(ours["weights_bytes"]),
         f"{int8['weights_bytes'] / ours['weights_bytes']:.2f}x"),
        ("weights GB (Mimi)", gb(int8["codec_weights_bytes"]), gb(ours["codec_weights_bytes"]),
         f"{int8['codec_weights_bytes'] / ours['codec_weights_bytes']:.2f}x"),
    ]  # fmt: skip
    scheme = data["settings"]["quantize"]
    what = "int8 activations after a norm" if scheme == "int8-dynamic" else f"{dtype} activations"
    print(f"\nours with int8 weights ({what}) against ours in {dtype}, same run")
    print_rows(("", f"ours {scheme}", f"ours {dtype}", f"{scheme}/ours"), rows)
    a = data["accuracy"]
    snr = a["layer_snr_db"]
    print(f"\naccuracy of {scheme} against {dtype}, random weights, {a['frames']} greedy frames (bench.accuracy):")
    print("  per-layer output SNR, dB: " + ", ".join(f"{k} {v:.1f}" for k, v in snr.items()))
    print(f"  codebook-0 logit error: max {a['codebook0_logit_error_max']:.4f}, mean "
          f"{a['codebook0_logit_error_mean']:.4f} (logit std {a['codebook0_logit_std']:.4f})")  # fmt: skip
    print(f"  greedy codes equal: teacher-forced {a['teacher_forced_code_agreement']:.1%}, free-running "
          f"{a['free_running_code_agreement']:.1%} (first differing frame: {a['free_running_first_differing_frame']})")  # fmt: skip
    if "codec_decode_snr_db" in a:  # a checkpoint that carries the codec (bench.accuracy.compare_codec)
        print(f"  Mimi, random codebooks, one-shot / streamed: SNR of what the decoder transformer adds "
              f"{a['codec_decoder_transformer_added_snr_db']:.1f} / {a['codec_decoder_transformer_added_snr_db_streamed']:.1f} dB, "
              f"of the audio {a['codec_decode_snr_db']:.1f} / {a['codec_stream_snr_db']:.1f} dB; "
              f"codes equal on re-encoding {a['codec_encode_code_agreement']:.1%}")  # fmt: skip


def parse_args(argv=None):
    from csm.loading import default_dtype

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                        help="default: csm.loading.default_dtype's (bfloat16 on CUDA and on CPUs with AVX-512 BF16 "
                        "or AMX, else float32)")  # fmt: skip
    parser.add_argument("--frames", type=int, default=20, help="frames per decode run (at least 2)")
    parser.add_argument("--repeats", type=int, default=3, help="measured runs per model, after one warm-up")
    parser.add_argument("--small", action="store_true", help="tiny shapes (CI) instead of CSM-1B's")
    parser.add_argument("--json", type=Path, help="write all figures here")
    parser.add_argument("--checkpoint-dir", type=Path, help="build the random checkpoint here, or reuse it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quantize", choices=QUANTIZE_CHOICES,
                        help="also run ours with int8 weights (int8-dynamic: and int8 activations), and its accuracy")  # fmt: skip
    parser.add_argument(
        "--compile-decoder",
        action="store_true",
        help="also run ours with the depth decoder's step compiled by inductor (CPU, float dtypes)",
    )
    parser.add_argument("--accuracy-frames", type=int, default=50, help="greedy frames compared (--quantize)")
    parser.add_argument("--takes", type=int, help="instead: ours alone, N takes of a turn in one pass against 1 take")
    parser.add_argument("--worker", choices=list(RUNNERS), help=argparse.SUPPRESS)
    parser.add_argument("--build-checkpoint", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    refuse_quantize_here(parser, args.quantize, args.device)  # not after two models have loaded
    args.dtype = args.dtype or str(default_dtype(torch.device(args.device))).removeprefix("torch.")
    if args.frames < 2:
        parser.error("--frames must be at least 2 (frames/s is measured after the first)")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.takes is not None and not 2 <= args.takes <= MAX_TAKES:
        parser.error(f"--takes must be from 2 to {MAX_TAKES}")
    if args.takes and args.quantize:
        parser.error("--takes measures ours in --dtype only: leave out --quantize")
    if args.compile_decoder:
        from csm.compiling import refuse_compile_decoder_here

        refuse_compile_decoder_here(parser, args.device, getattr(torch, args.dtype), None, "--compile-decoder")
        if args.takes:
            parser.error("--takes measures ours in --dtype only: leave out --compile-decoder")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.build_checkpoint:
        return build_checkpoint(args.build_checkpoint, args.small, args.seed)
    if args.worker:
        return serve(args.worker, str(args.checkpoint_dir), args.device, args.dtype, args.seed)
    with tempfile.TemporaryDirectory(prefix="csm-bench-") as scratch:
        folder = (args.checkpoint_dir or Path(scratch) / "checkpoint").resolve()  # workers run in the repo root
        started = time.perf_counter()
        ensure_checkpoint(folder, args.small, args.seed)
        print(f"checkpoint ready in {time.perf_counter() - started:.1f} s: {folder}", file=sys.stderr)
        if args.takes:
            data = takes_report(args, *measure_takes(folder, args, Path(scratch)))
        else:
            accuracy = measure_accuracy(folder, args, Path(scratch)) if args.quantize else None
            results, device = measure(folder, args, Path(scratch))
            data = report(args, results, device, accuracy)
    if args.takes:
        print_takes_table(data)
    else:
        print_table(data)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=2) + "\n")
        print(f"\nwritten: {args.json}")


if __name__ == "__main__":
    main()
