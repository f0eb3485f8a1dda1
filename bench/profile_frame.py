"""Where one decode frame of our CSM spends its time: backbone, depth decoder, the rest.

    python -m bench.profile_frame [--checkpoint-dir DIR] [--small] [--dtype float32] [--frames 8] [--ops]
                                  [--quantize int8|int8-dynamic] [--takes N]

Runs the real `Model.generate_frame` (prefill of bench.bench's 312-frame prompt, then one frame
per step) with timing hooks on the backbone and decoder stacks and on each block's attention and
MLP; "the rest" (embeddings, heads, sampling, Python) is the frame time minus the stacks. The
weight bytes each part reads per frame give its effective memory bandwidth: a batch-1 decode step
is a chain of matrix-vector products, so it cannot beat the time to stream its weights once.
`--ops` adds a torch.profiler table of one decode frame. `--takes N` decodes N takes at once, as the
generator does (the prompt prefilled at batch 1, then shared by the N rows of the cache).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from bench.bench import FRAME_SECONDS, TEMPERATURE, TOPK, ensure_checkpoint, our_frames, prompt_parts, weight_bytes
from csm.packing import PackedLinear
from csm.quantize import QUANTIZE_CHOICES, DynamicInt8Linear, Int8Linear, refuse_quantize_here


class StageTimer:
    """Adds each hooked module's wall time (and the weight bytes it reads, if given) into a named bucket."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)
        self.bytes: dict[str, int] = defaultdict(int)
        self._started: dict[int, float] = {}
        self.handles = []

    def now(self) -> float:
        """The time once the device has done what it was given."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.device.type == "mps":
            torch.mps.synchronize()
        return time.perf_counter()

    def hook(self, module: torch.nn.Module, bucket: str, nbytes: int = 0) -> None:
        def before(mod, args):
            self._started[id(mod)] = self.now()

        def after(mod, args, output):
            self.seconds[bucket] += self.now() - self._started.pop(id(mod))
            self.bytes[bucket] += nbytes

        self.handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def reset(self) -> None:
        self.seconds.clear()
        self.bytes.clear()


def products(model) -> list[torch.nn.Module]:
    """Every module that is one weight product: the Linears, packed or int8, and each codebook head where the
    heads are modules (packed or int8; a plain model multiplies by its `audio_head` tensor, not hooked)."""
    kinds = (torch.nn.Linear, PackedLinear, Int8Linear, DynamicInt8Linear)
    return [m for m in model.modules() if isinstance(m, kinds)]


def load(args):
    from csm import loading

    checkpoint = loading.resolve_checkpoint(str(args.checkpoint_dir))
    model = loading.load_model(checkpoint, args.device, getattr(torch, args.dtype), quantize=args.quantize)
    model.setup_caches(args.takes)
    return model


class FrameProfile:
    """Prefill bench.bench's prompt, then time decode frames, with or without the timing hooks."""

    def __init__(self, model, takes: int = 1):
        device, n = model.device, model.num_codebooks
        self.model, self.takes = model, takes
        self.tokens, self.mask = (t.to(device) for t in our_frames(prompt_parts(n, model.config.text_vocab_size, 0), n))
        self.prompt_len = self.tokens.shape[1]
        self.step_tokens = torch.zeros(takes, 1, n + 1, dtype=torch.long, device=device)
        self.step_mask = torch.ones_like(self.step_tokens, dtype=torch.bool)
        self.step_mask[..., -1] = False  # generated frames carry no text
        self.timer = StageTimer(device)

    def add_hooks(self) -> None:
        model, timer = self.model, self.timer
        for name, stack in (("backbone", model.backbone), ("decoder", model.decoder)):
            timer.hook(stack, name, weight_bytes(stack))
            for block in stack.layers:
                timer.hook(block.attn, f"{name} attention")
                timer.hook(block.mlp, f"{name} MLP", weight_bytes(block.mlp))
        for module in products(model):
            timer.hook(module, "products", weight_bytes(module))

    def step(self, frame: torch.Tensor, i: int) -> torch.Tensor:
        self.step_tokens[:, 0, :-1] = frame
        position = torch.full((self.takes, 1), self.prompt_len + i - 1, device=self.model.device)
        return self.model.generate_frame(self.step_tokens, self.step_mask, position, TEMPERATURE, TOPK)

    def prefill(self) -> torch.Tensor:
        from csm.decoding import share_prompt

        model, takes = self.model, self.takes
        positions = torch.arange(self.prompt_len, device=model.device)[None]
        if takes == 1:
            return model.generate_frame(self.tokens, self.mask, positions, TEMPERATURE, TOPK)
        last = model.backbone_hidden(self.tokens, self.mask, positions)[:, -1]
        share_prompt(model, takes, self.prompt_len)
        return model.sample_frame(last.expand(takes, -1).contiguous(), TEMPERATURE, TOPK)

    @torch.inference_mode()
    def run(self, count: int) -> tuple[float, list[tuple[float, dict, dict]]]:
        """Prefill seconds, and per frame after it: (seconds, seconds by bucket, weight bytes by bucket)."""
        timer = self.timer
        torch.manual_seed(0)
        self.model.reset_caches()
        timer.reset()
        started = timer.now()
        frame = self.prefill()
        prefill_seconds = timer.now() - started
        per_frame = []
        for i in range(1, count):
            timer.reset()
            started = timer.now()
            frame = self.step(frame, i)
            per_frame.append((timer.now() - started, dict(timer.seconds), dict(timer.bytes)))
        return prefill_seconds, per_frame


def read_bandwidth(device: torch.device, nbytes: int = 1 << 29, repeats: int = 5) -> float:
    """GB/s of a plain streaming read here (the sum of a buffer far larger than the caches), for reference."""
    buffer = torch.ones(nbytes // 2, dtype=torch.bfloat16, device=device)
    timer = StageTimer(device)
    times = []
    for _ in range(repeats + 1):  # the first one warms up
        started = timer.now()
        buffer.sum()
        times.append(timer.now() - started)
    return nbytes / statistics.median(times[1:]) / 1e9


def profile(model, frames: int, ops: bool, takes: int = 1) -> dict:
    """Print where a decode frame's time goes; returns the figures (seconds and GB/s by part)."""
    profiler = FrameProfile(model, takes)
    profiler.run(3)  # warm-up
    plain_prefill, plain = profiler.run(frames)  # no hooks: the reference speed
    profiler.add_hooks()
    _, per_frame = profiler.run(frames)
    profiler.timer.remove()
    figures = dict(
        prefill_seconds=plain_prefill,
        frame_seconds=statistics.median(t for t, _, _ in plain),
        hooked_frame_seconds=statistics.median(t for t, _, _ in per_frame),
        parts={k: statistics.median(s[k] for _, s, _ in per_frame) for k in per_frame[0][1]},
        part_bytes=per_frame[0][2],  # the same every frame
        read_gb_per_second=read_bandwidth(model.device),
    )
    print_profile(model, profiler.prompt_len, takes, figures)
    if ops:
        print_ops(profiler, frames)
    return figures


def print_profile(model, prompt_len: int, takes: int, figures: dict) -> None:
    part, nbytes, total = figures["parts"], figures["part_bytes"], figures["hooked_frame_seconds"]
    frame = figures["frame_seconds"]
    kinds = {type(m) for m in model.modules()}
    int8 = " int8-dynamic" if DynamicInt8Linear in kinds else " with int8 weights" if Int8Linear in kinds else ""
    print(f"\n{model.dtype}{int8}, {torch.get_num_threads()} threads, prompt {prompt_len} frames, {takes} take(s)")
    print(f"prefill + first frame: {figures['prefill_seconds']:.3f} s")
    print(
        f"decode frame (median): {frame * 1e3:.1f} ms ({1 / frame:.2f} frames/s, "
        f"real-time factor {frame / FRAME_SECONDS:.2f}); with the timing hooks: {total * 1e3:.1f} ms"
    )
    steps = model.num_codebooks - 1
    heads_hooked = not isinstance(model.audio_head, torch.Tensor)
    rest = total - part["backbone"] - part["decoder"]
    rows = [
        ("backbone (1 step)", "backbone"), ("  attention", "backbone attention"), ("  MLP", "backbone MLP"),
        (f"decoder ({steps} steps)", "decoder"), ("  attention", "decoder attention"), ("  MLP", "decoder MLP"),
        ("rest: embeddings, heads, sampling, Python", None),
        ("every weight product (Linears, heads)" if heads_hooked else "every Linear (the heads are a tensor)", "products"),
    ]  # fmt: skip
    for label, key in rows:
        seconds = part[key] if key else rest
        reads = nbytes.get(key, 0) if key else 0
        bandwidth = f"  {reads / seconds / 1e9:5.1f} GB/s of weights" if reads else ""
        print(f"  {label:<44} {seconds * 1e3:8.1f} ms {100 * seconds / total:5.1f} %{bandwidth}")
    print(f"  for reference, a plain read (sum) of 0.5 GiB here: {figures['read_gb_per_second']:5.1f} GB/s")


def print_ops(profiler: FrameProfile, frames: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    model = profiler.model
    frame = torch.zeros(profiler.takes, model.num_codebooks, dtype=torch.long, device=model.device)
    with torch.inference_mode(), torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        profiler.step(frame, frames)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint-dir", type=Path, help="a bench.bench checkpoint folder (built if missing)")
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ops", action="store_true", help="also print a torch.profiler table of one frame")
    parser.add_argument(
        "--quantize",
        choices=QUANTIZE_CHOICES,
        help="int8 weights, or int8-dynamic: int8 activations too after norms (csm.quantize)",
    )
    parser.add_argument("--takes", type=int, default=1, help="takes decoded at once (rows of one batch)")
    args = parser.parse_args(argv)
    refuse_quantize_here(parser, args.quantize, args.device)
    with tempfile.TemporaryDirectory(prefix="csm-profile-") as scratch:
        args.checkpoint_dir = args.checkpoint_dir or Path(scratch) / "checkpoint"
        ensure_checkpoint(args.checkpoint_dir, args.small, args.seed)
        model = load(args)
        return profile(model, max(args.frames, 2), args.ops, args.takes)


if __name__ == "__main__":
    main()
