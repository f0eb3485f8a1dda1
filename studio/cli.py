"""Command-line options (each with an environment variable, for a Space) and the start-up checks."""

from __future__ import annotations

import argparse
import os

import torch

from studio.service import DEFAULT_MODEL, Studio
from studio.ui import DEFAULT_QUEUE_SIZE

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
                        help="model precision (default: $CSM_STUDIO_DTYPE or auto: bfloat16 on CUDA, float32 "
                        "elsewhere; bfloat16 also speeds up CPUs with AVX-512 BF16 or AMX)")  # fmt: skip
    parser.add_argument("--host", default=None, help="address to listen on (default: gradio's, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default: gradio's, 7860 or the next free one)")
    parser.add_argument("--queue-size", type=int, default=int(env("CSM_STUDIO_QUEUE_SIZE", DEFAULT_QUEUE_SIZE)),
                        help="requests that may wait; more get a 'busy' answer (default: $CSM_STUDIO_QUEUE_SIZE or "
                        f"{DEFAULT_QUEUE_SIZE})")  # fmt: skip
    parser.add_argument("--share", action="store_true", help="also serve on a public gradio.live link")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    """The options; a device this machine does not have is refused here, naming the ones it has."""
    from csm.loading import resolve_device

    parser = option_parser()
    args = parser.parse_args(argv)
    if args.device is not None:
        try:
            args.device = str(resolve_device(args.device))
        except ValueError as e:
            parser.error(f"--device {args.device}: {e}")
    return args


def start_studio(args: argparse.Namespace) -> Studio:
    """Load the model (or learn why not) before serving; an unreachable Hub is found out once, quickly."""
    from csm.hub import go_offline_if_unreachable

    studio = Studio(args.model, device=args.device, dtype=DTYPES[args.dtype])
    if not studio.is_tiny:
        go_offline_if_unreachable()
        studio.presets.fetch_hub_prompts()  # in the background: start-up is not delayed
    return studio.load()
