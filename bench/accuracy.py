"""How far int8 weights move our CSM from the same model with float weights: same checkpoint, same prompt.

    python -m bench.accuracy --checkpoint-dir DIR [--small] [--dtype bfloat16] [--frames 50] [--json out.json]
                             [--quantize int8|int8-dynamic|none] [--reference-dtype float32]

For scale, `--quantize none --reference-dtype float32` measures the same figures for bf16 weights
against fp32 ones: what the bf16 default already costs.

Both models load in this one process (bench.bench runs it in a child of its own, away from the
speed workers). The float model first generates `frames` greedy frames after bench.bench's prompt;
then both models read the prompt and those frames, and:

- per-layer output SNR, dB: 10 log10(sum ref^2 / sum (int8 - ref)^2) of each block's output, the
  backbone's over every position, the depth decoder's over the frames (teacher-forced). Each model
  runs its own forward, so a layer's figure includes the error of the layers before it;
- codebook-0 logits at the positions that choose the frames: max and mean absolute error, next to
  the logits' standard deviation for scale;
- greedy codes, teacher-forced: the share of codes (frames x codebooks) whose argmax is the same when
  both models are fed the float model's frames, one decision at a time;
- greedy codes, free-running: the share of codes equal when the int8 model generates its own frames,
  and the first frame that differs (one different code changes everything after it).

- the codec (int8 modes quantize the Linears of Mimi's transformers too, where that is not slower):
  the SNR of what the decoder transformer adds to its input and of the decoded audio, one-shot and
  streamed in 2-frame chunks, and the share of equal codes when that audio is encoded again, float32
  against int8, on random codes (`codec_quantized` false: the codec stayed float32 on this device).

Random weights give flat logits, whose argmax flips on small differences, so the agreement figures
here are a pessimistic view of a trained model's. They say nothing about how the speech sounds.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import torch
from torch import Tensor

from bench.bench import ensure_checkpoint, our_frames, prompt_parts
from csm.quantize import QUANTIZE_CHOICES, refuse_quantize_here

FRAMES = 50


def greedy_frames(model, tokens: Tensor, mask: Tensor, count: int) -> Tensor:
    """`count` greedy frames [count, N] after the prompt, each fed back as the next input."""
    model.setup_caches(1)
    positions = torch.arange(tokens.shape[1], device=tokens.device)[None]
    frames = []
    for _ in range(count):
        frame = model.generate_frame(tokens, mask, positions, temperature=1.0, topk=1)
        frames.append(frame[0])
        tokens, mask = frame_inputs(frame)
        positions = positions[:, -1:] + 1
    return torch.stack(frames)


def frame_inputs(frames: Tensor) -> tuple[Tensor, Tensor]:
    """Generated frames [F, N] as model input [1, F, N+1]: audio columns present, text column empty."""
    tokens = torch.cat([frames, torch.zeros_like(frames[:, :1])], dim=1)[None]
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[..., -1] = False
    return tokens, mask


@torch.inference_mode()
def teacher_forced(model, tokens: Tensor, mask: Tensor, frames: Tensor) -> dict:
    """Every block's output, and the logits that choose each frame's codes, with `frames` as the history."""
    prompt_len, count = tokens.shape[1], frames.shape[0]
    frame_tokens, frame_mask = frame_inputs(frames[:-1])
    tokens, mask = torch.cat([tokens, frame_tokens], dim=1), torch.cat([mask, frame_mask], dim=1)
    outputs = {}

    def keep(key: str):
        def hook(module, args, output) -> None:  # returns None: the block's output stays as it is
            outputs[key] = output.float()

        return hook

    hooks = [
        layer.register_forward_hook(keep(f"{name} {i}"))
        for name, stack in (("backbone", model.backbone), ("decoder", model.decoder))
        for i, layer in enumerate(stack.layers)
    ]
    try:
        model.setup_caches(1)
        hidden = model.backbone_hidden(tokens, mask, torch.arange(tokens.shape[1], device=tokens.device)[None])
        last = hidden[0, prompt_len - 1 : prompt_len - 1 + count]  # the state that chooses frame t
        # The decoder reads one row per frame; only its own cache needs that many rows.
        model.decoder.setup_cache(count, model.num_codebooks, model.dtype, model.device)
        rest = model.decoder_logits(last, frames)
    finally:
        for hook in hooks:
            hook.remove()
        model.setup_caches(1)
    return dict(layers=outputs, codebook0=model.codebook0_head(last).float(), rest=rest.float())


def snr_db(reference: Tensor, other: Tensor) -> float:
    noise = (other - reference).pow(2).sum().item()
    return math.inf if noise == 0 else 10 * math.log10(reference.pow(2).sum().item() / noise)


def compare(reference, quantized, tokens: Tensor, mask: Tensor, count: int = FRAMES) -> dict:
    """The accuracy figures of `quantized` against `reference` (two models of the same checkpoint)."""
    frames = greedy_frames(reference, tokens, mask, count)
    ref, quant = (teacher_forced(m, tokens, mask, frames) for m in (reference, quantized))
    error = (quant["codebook0"] - ref["codebook0"]).abs()

    def choices(out: dict) -> Tensor:  # [F, N]: codebook 0, then 1..N-1
        return torch.cat([out["codebook0"].argmax(-1, keepdim=True), out["rest"].argmax(-1)], dim=1)

    own = greedy_frames(quantized, tokens, mask, count)
    differing = (own != frames).any(dim=1).nonzero()
    return dict(
        frames=count,
        layer_snr_db={key: snr_db(ref["layers"][key], quant["layers"][key]) for key in ref["layers"]},
        codebook0_logit_error_max=error.max().item(),
        codebook0_logit_error_mean=error.mean().item(),
        codebook0_logit_std=ref["codebook0"].std().item(),
        teacher_forced_code_agreement=(choices(quant) == choices(ref)).float().mean().item(),
        free_running_code_agreement=(own == frames).float().mean().item(),
        free_running_first_differing_frame=int(differing[0]) if len(differing) else None,
    )


STREAM_CHUNK_FRAMES = 2  # the codec's figures when streamed: chunks this long, as the generator's are short


def compare_codec(checkpoint, num_codebooks: int, quantize: str, seed: int, device: str, frames: int = FRAMES) -> dict:
    """int8 modes also hold the Linears of Mimi's transformers in int8: the codec's figures, float32 against that.

    Each one-shot (every frame in one call, whose products keep float32 inputs) and streamed (chunks of
    STREAM_CHUNK_FRAMES, whose products round their inputs to bf16 on a CPU with bf16 arithmetic). The
    bench checkpoint's codebooks are all zero, as Mimi's init leaves them (every code decodes the same),
    so they are drawn at random here first, as csm.tiny does.
    """
    from csm import loading
    from csm.codec import load_codec
    from csm.quantize import Int8Linear

    config, state = loading.codec_weights(checkpoint)
    draw = torch.Generator().manual_seed(seed)
    for name in [n for n in state if n.endswith(("embed_sum", "cluster_usage"))]:
        shape = state[name].shape
        sums = name.endswith("sum")
        state[name] = torch.randn(shape, generator=draw) if sums else 0.5 + 1.5 * torch.rand(shape, generator=draw)
    codecs = [
        load_codec(None, num_codebooks, device=device, codec_config=config, codec_state_dict=state, quantize=q)
        for q in (None, quantize)
    ]
    codes = torch.randint(0, codecs[0].codebook_size, (num_codebooks, frames), generator=draw)
    step = STREAM_CHUNK_FRAMES

    def streamed(codec) -> Tensor:
        decoder = codec.stream_decoder()
        return torch.cat([decoder.decode(codes[:, i : i + step]) for i in range(0, frames, step)])

    audio = [codec.decode(codes) for codec in codecs]
    return dict(
        codec_quantized=any(isinstance(m, Int8Linear) for m in codecs[1].model.modules()),
        codec_decoder_transformer_added_snr_db=snr_db(*transformer_parts(codecs, codes, frames)),
        codec_decoder_transformer_added_snr_db_streamed=snr_db(*transformer_parts(codecs, codes, step)),
        codec_decode_snr_db=snr_db(*audio),
        codec_stream_snr_db=snr_db(*(streamed(codec) for codec in codecs)),
        codec_encode_code_agreement=(codecs[1].encode(audio[0]) == codecs[0].encode(audio[0])).float().mean().item(),
    )


@torch.no_grad()
def transformer_parts(codecs, codes: Tensor, window: int) -> list[Tensor]:
    """What each codec's decoder transformer adds to its input (Mimi adds it to a residual), run on `window`
    frames at a time, each window alone: the same rows for both codecs, as short as a streamed chunk's."""
    hidden = codecs[0].model.decoder.upsample(codecs[0].model.quantizer.decode(codes[None].to(codecs[0].device)))
    pieces = hidden.transpose(1, 2).split(2 * window, dim=1)  # Mimi's transformer runs 2 steps a frame
    return [
        torch.cat([codec.model.decoder.decoder_transformer(p).last_hidden_state - p for p in pieces], dim=1)
        for codec in codecs
    ]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint-dir", type=Path, help="a bench.bench checkpoint folder (built if missing)")
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--quantize", default="int8", choices=[*QUANTIZE_CHOICES, "none"])
    parser.add_argument("--reference-dtype", choices=["float32", "bfloat16", "float16"], help="default: --dtype")
    parser.add_argument("--frames", type=int, default=FRAMES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the figures here (else print them)")
    args = parser.parse_args(argv)
    quantize = None if args.quantize == "none" else args.quantize
    refuse_quantize_here(parser, quantize, args.device)
    from csm import loading

    with tempfile.TemporaryDirectory(prefix="csm-accuracy-") as scratch:
        folder = args.checkpoint_dir or Path(scratch) / "checkpoint"
        ensure_checkpoint(folder, args.small, args.seed)
        checkpoint = loading.resolve_checkpoint(str(folder))
        args.reference_dtype = args.reference_dtype or args.dtype
        reference = loading.load_model(checkpoint, device=args.device, dtype=getattr(torch, args.reference_dtype))
        quantized = loading.load_model(checkpoint, device=args.device, dtype=getattr(torch, args.dtype),
                                       quantize=quantize)  # fmt: skip
        carries_codec = quantize and checkpoint.layout == "transformers"
        codec_figures = (
            compare_codec(checkpoint, reference.num_codebooks, quantize, args.seed, args.device, args.frames)
            if carries_codec
            else {}
        )
    n = reference.num_codebooks
    tokens, mask = (t.to(reference.device) for t in our_frames(prompt_parts(n, reference.config.text_vocab_size, 0), n))
    figures = dict(dtype=args.dtype, quantize=args.quantize, reference_dtype=args.reference_dtype,
                   **compare(reference, quantized, tokens, mask, args.frames), **codec_figures)  # fmt: skip
    text = json.dumps(figures, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
