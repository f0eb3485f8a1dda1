"""Command-line options (each with an environment variable, for a Space) and the start-up checks."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from csm.quantize import QUANTIZE_CHOICES
from studio.asr import CPU_MODEL, GPU_MODEL
from studio.ratings import DEFAULT_RATINGS_DIR
from studio.service import DEFAULT_MODEL, Studio
from studio.ui import DEFAULT_QUEUE_SIZE
from studio.watermark import DEFAULT_MESSAGE

DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def option_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="CSM Studio: conversational speech with CSM-1B, in the browser.")
    env = os.environ.get
    parser.add_argument("--model", default=env("CSM_STUDIO_MODEL", DEFAULT_MODEL),
                        help="'tiny' (offline random model, noise), a Hub repo id, or a local folder "
                        f"(default: $CSM_STUDIO_MODEL or {DEFAULT_MODEL})")  # fmt: skip
    parser.add_argument("--device", default=env("CSM_STUDIO_DEVICE") or None,
                        help="cuda, mps or cpu (default: $CSM_STUDIO_DEVICE or the best available)")  # fmt: skip
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=env("CSM_STUDIO_DTYPE") or "auto",
                        help="model precision (default: $CSM_STUDIO_DTYPE or auto: bfloat16 on CUDA and on CPUs "
                        "with AVX-512 BF16 or AMX, float32 elsewhere)")  # fmt: skip
    parser.add_argument("--quantize", choices=["none", *QUANTIZE_CHOICES], default=env("CSM_STUDIO_QUANTIZE") or "none",
                        help="int8: int8 weights (less memory and faster on a CPU); int8-dynamic: the same and int8 "
                        "activations after each norm (faster again, CPUs with VNNI only). Speech quality of either "
                        "not yet judged by ear, see bench/RESULTS.md (default: $CSM_STUDIO_QUANTIZE or none)")  # fmt: skip
    parser.add_argument("--compile-decoder", action="store_true",
                        default=env("CSM_STUDIO_COMPILE_DECODER", "").lower() in ("1", "true", "yes"),
                        help="CPU: compile one take's depth-decoder steps with torch.compile (about 1.5x faster "
                        "decoding on 2 cores, for about 26 s more at start-up and 0.5 GB more memory; needs a C++ "
                        "compiler; it rounds differently, so a seed gives other audio than without it; falls back "
                        "to the default if compiling fails) (default: $CSM_STUDIO_COMPILE_DECODER, off)")  # fmt: skip
    parser.add_argument("--asr-model", default=env("CSM_STUDIO_ASR_MODEL") or None,
                        help="the speech recogniser that transcribes clips without a transcript: a Whisper Hub id, a "
                        "local folder, or 'tiny' (offline random model, nonsense); loaded on first use (default: "
                        f"$CSM_STUDIO_ASR_MODEL, else {GPU_MODEL} on CUDA, {CPU_MODEL} elsewhere, tiny with "
                        "--model tiny)")  # fmt: skip
    parser.add_argument("--host", default=None, help="address to listen on (default: gradio's, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default: gradio's, 7860 or the next free one)")
    parser.add_argument("--queue-size", type=int, default=int(env("CSM_STUDIO_QUEUE_SIZE", DEFAULT_QUEUE_SIZE)),
                        help="requests that may wait; more get a 'busy' answer (default: $CSM_STUDIO_QUEUE_SIZE or "
                        f"{DEFAULT_QUEUE_SIZE})")  # fmt: skip
    parser.add_argument("--share", action="store_true", help="also serve on a public gradio.live link")
    parser.add_argument("--no-watermark", action="store_true",
                        default=env("CSM_STUDIO_NO_WATERMARK", "").lower() in ("1", "true", "yes"),
                        help="do not watermark the outputs: for local research use only "
                        "(default: $CSM_STUDIO_NO_WATERMARK, else every output is watermarked)")  # fmt: skip
    parser.add_argument("--watermark-message", type=watermark_message,
                        default=env("CSM_STUDIO_WATERMARK_MESSAGE") or DEFAULT_MESSAGE,
                        help="the 16-bit message the watermark carries, e.g. 0xC5A1 or 50593: what /detect "
                        f"calls 'made by this app' (default: $CSM_STUDIO_WATERMARK_MESSAGE or {DEFAULT_MESSAGE:#06x})")  # fmt: skip
    parser.add_argument("--ratings-dir", type=Path, default=Path(env("CSM_STUDIO_RATINGS_DIR") or DEFAULT_RATINGS_DIR),
                        help="where evaluators' ratings are kept: ratings.csv and the rated clips "
                        f"(default: $CSM_STUDIO_RATINGS_DIR or ./{DEFAULT_RATINGS_DIR})")  # fmt: skip
    parser.add_argument("--ratings-dataset", default=env("CSM_STUDIO_RATINGS_DATASET") or None,
                        help="a Hub dataset repo id to push the ratings folder to every few minutes (private; "
                        "needs HF_TOKEN with write access) (default: $CSM_STUDIO_RATINGS_DATASET, none)")  # fmt: skip
    return parser


def watermark_message(value) -> int:
    try:
        message = int(str(value), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number (decimal, or hex like 0xC5A1)") from None
    if not 0 <= message < 1 << 16:
        raise argparse.ArgumentTypeError(f"{value!r} does not fit in 16 bits (0 to 65535)")
    return message


def refuse_bad_defaults(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """argparse checks the choices of what is typed, not of a default: one from the environment (a Space's
    settings) that is not a choice is a usage error here, not a KeyError at load."""
    for action in parser._actions:
        value = getattr(args, action.dest, None)
        if action.choices and value not in action.choices:
            choices = ", ".join(map(str, action.choices))
            parser.error(f"argument {action.option_strings[0]}: invalid choice {value!r} from its environment "
                         f"variable (choose from {choices})")  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    """The options; a device this machine does not have is refused here, naming the ones it has, as is a
    quantization the device cannot run."""
    from csm.loading import resolve_device
    from csm.quantize import refuse_quantize_here

    parser = option_parser()
    args = parser.parse_args(argv)
    refuse_bad_defaults(parser, args)
    if args.device is not None:
        try:
            args.device = str(resolve_device(args.device))
        except ValueError as e:
            parser.error(f"--device {args.device}: {e}")
    if args.quantize != "none":
        refuse_quantize_here(parser, args.quantize, str(resolve_device(args.device)))
    if args.compile_decoder:
        refuse_compile_here(parser, args)
    return args


def refuse_compile_here(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    from csm.compiling import refuse_compile_decoder_here
    from csm.loading import default_dtype, resolve_device

    device = resolve_device(args.device)
    quantize = None if args.quantize == "none" else args.quantize
    dtype = DTYPES[args.dtype] or default_dtype(device)
    refuse_compile_decoder_here(
        parser, str(device), dtype, quantize, "--compile-decoder (or CSM_STUDIO_COMPILE_DECODER)"
    )


def start_studio(args: argparse.Namespace) -> Studio:
    """Load the model (or learn why not) before serving; an unreachable Hub is found out once, quickly."""
    from csm.hub import go_offline_if_unreachable

    studio = Studio(args.model, device=args.device, dtype=DTYPES[args.dtype], watermark=not args.no_watermark,
                    watermark_message=args.watermark_message,
                    quantize=None if args.quantize == "none" else args.quantize, asr_model=args.asr_model,
                    compile_decoder=args.compile_decoder)  # fmt: skip
    if not studio.is_tiny:
        go_offline_if_unreachable()
        studio.presets.fetch_hub_prompts()  # in the background: start-up is not delayed
    return studio.load()
