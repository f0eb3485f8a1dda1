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
from csm.quantize import QUANTIZE_CHOICES, DynamicInt8Linear, Int8Linear, refuse_quantize_here


class StageTimer:
    """Adds each hooked module's wall time into a named bucket."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._started: dict[int, float] = {}
        self.handles = []

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def hook(self, module: torch.nn.Module, bucket: str) -> None:
        def before(mod, args):
            self._started[id(mod)] = self._now()

        def after(mod, args, output):
            self.seconds[bucket] += self._now() - self._started.pop(id(mod))
            self.calls[bucket] += 1

        self.handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


def load(args):
    from csm import loading

    checkpoint = loading.resolve_checkpoint(str(args.checkpoint_dir))
    model = loading.load_model(checkpoint, args.device, getattr(torch, args.dtype), quantize=args.quantize)
    model.setup_caches(args.takes)
    return model


@torch.inference_mode()
def profile(model, frames: int, ops: bool, takes: int = 1) -> None:
    from csm.decoding import share_prompt

    device, n = model.device, model.num_codebooks
    tokens, mask = (t.to(device) for t in our_frames(prompt_parts(n, model.config.text_vocab_size, 0), n))
    prompt_len = tokens.shape[1]
    step_tokens = torch.zeros(takes, 1, n + 1, dtype=torch.long, device=device)
    step_mask = torch.ones_like(step_tokens, dtype=torch.bool)
    step_mask[..., -1] = False  # generated frames carry no text

    timer = StageTimer(device)

    def add_hooks():
        for name, stack in (("backbone", model.backbone), ("decoder", model.decoder)):
            timer.hook(stack, name)
            for block in stack.layers:
                timer.hook(block.attn, f"{name} attention")
                timer.hook(block.mlp, f"{name} MLP")

    def step(frame, i):
        step_tokens[:, 0, :-1] = frame
        position = torch.full((takes, 1), prompt_len + i - 1, device=device)
        return model.generate_frame(step_tokens, step_mask, position, TEMPERATURE, TOPK)

    def prefill():
        positions = torch.arange(prompt_len, device=device)[None]
        if takes == 1:
            return model.generate_frame(tokens, mask, positions, TEMPERATURE, TOPK)
        last = model.backbone_hidden(tokens, mask, positions)[:, -1]
        share_prompt(model, takes, prompt_len)
        return model.sample_frame(last.expand(takes, -1).contiguous(), TEMPERATURE, TOPK)

    def run(count: int):
        torch.manual_seed(0)
        model.reset_caches()
        timer.reset()
        started = timer._now()
        frame = prefill()
        prefill_seconds = timer._now() - started
        per_frame = []
        for i in range(1, count):
            timer.reset()
            started = timer._now()
            frame = step(frame, i)
            per_frame.append((timer._now() - started, dict(timer.seconds)))
        return prefill_seconds, per_frame

    run(3)  # warm-up
    plain_prefill, plain = run(frames)  # no hooks: the reference speed
    add_hooks()
    _, per_frame = run(frames)
    timer.remove()
    plain_total = statistics.median(t for t, _ in plain)
    total = statistics.median(t for t, _ in per_frame)
    part = {k: statistics.median(s[k] for _, s in per_frame) for k in per_frame[0][1]}
    decoder_steps = n - 1
    reads = {  # weight bytes streamed per frame
        "backbone": weight_bytes(model.backbone),
        "decoder": weight_bytes(model.decoder) * decoder_steps,
        "backbone MLP": weight_bytes(model.backbone.layers[0].mlp) * len(model.backbone.layers),
        "decoder MLP": weight_bytes(model.decoder.layers[0].mlp) * len(model.decoder.layers) * decoder_steps,
    }
    rest = total - part["backbone"] - part["decoder"]
    kinds = {type(m) for m in model.modules()}
    int8 = " int8-dynamic" if DynamicInt8Linear in kinds else " with int8 weights" if Int8Linear in kinds else ""
    print(f"\n{model.dtype}{int8}, {torch.get_num_threads()} threads, prompt {prompt_len} frames, {takes} take(s)")
    print(f"prefill + first frame: {plain_prefill:.3f} s")
    print(
        f"decode frame (median): {plain_total * 1e3:.1f} ms ({1 / plain_total:.2f} frames/s, "
        f"real-time factor {plain_total / FRAME_SECONDS:.2f}); with the timing hooks: {total * 1e3:.1f} ms"
    )
    rows = [
        ("backbone (1 step)", part["backbone"], reads["backbone"]),
        ("  attention", part["backbone attention"], None),
        ("  MLP", part["backbone MLP"], reads["backbone MLP"]),
        (f"decoder ({decoder_steps} steps)", part["decoder"], reads["decoder"]),
        ("  attention", part["decoder attention"], None),
        ("  MLP", part["decoder MLP"], reads["decoder MLP"]),
        ("rest: embeddings, heads, sampling, Python", rest, None),
    ]
    for label, seconds, nbytes in rows:
        bandwidth = f"  {nbytes / seconds / 1e9:5.1f} GB/s of weights" if nbytes else ""
        print(f"  {label:<44} {seconds * 1e3:8.1f} ms {100 * seconds / total:5.1f} %{bandwidth}")
    if ops:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        frame = torch.zeros(takes, n, dtype=torch.long, device=device)
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            step(frame, frames)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def main(argv=None) -> None:
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
        profile(model, max(args.frames, 2), args.ops, args.takes)


if __name__ == "__main__":
    main()
