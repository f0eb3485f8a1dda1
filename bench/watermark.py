"""What the watermark costs: seconds of AudioSeal marking per second of generated audio.

AudioSeal's real architecture (its 16-bit model card) with random weights: the same work as the
trained model, nothing downloaded. Audio is marked in the chunks the app streams (FIRST_CHUNK_FRAMES,
then CHUNK_FRAMES).

    python -m bench.watermark --device cpu --seconds 20 --json bench/out/watermark-cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

import studio.watermark as watermark
from csm.generator import CHUNK_FRAMES, FIRST_CHUNK_FRAMES

RATE, SAMPLES_PER_FRAME = 24_000, 1_920


def chunks(seconds: float) -> list[np.ndarray]:
    audio = (0.1 * np.random.default_rng(0).standard_normal(int(seconds * RATE))).astype(np.float32)
    sizes, start, pieces = [FIRST_CHUNK_FRAMES * SAMPLES_PER_FRAME], 0, []
    while start < len(audio):
        size = sizes[-1] if pieces else sizes[0]
        pieces.append(audio[start : start + size])
        start, sizes = start + size, [CHUNK_FRAMES * SAMPLES_PER_FRAME]
    return pieces


def measure(device: str, seconds: float, repeats: int, full_size: bool) -> dict:
    if full_size:
        watermark.TINY_SEANET = {}  # the card's own sizes: random weights, the real model's cost
    marker = watermark._build(tiny=True, message=watermark.DEFAULT_MESSAGE, device=device)
    pieces = chunks(seconds)
    marker.mark(pieces[0])  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for piece in pieces:
            marker.mark(piece)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    first = min(_time(marker.mark, pieces[0]) for _ in range(repeats))
    return {
        "device": device,
        "audio_seconds": seconds,
        "chunks": len(pieces),
        "seconds_per_audio_second": round(float(np.median(times)) / seconds, 4),
        "first_chunk_s": round(first, 4),
        "parameters": sum(p.numel() for p in marker.generator.parameters()),
        "runs_s": [round(t, 3) for t in times],
    }


def _time(fn, *args) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--small", action="store_true", help="the tiny random model (CI: the code path only)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = measure(args.device, args.seconds, args.repeats, full_size=not args.small)
    result |= {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.processor()}
    print(f"AudioSeal marking on {args.device}: {result['seconds_per_audio_second']:.3f} s per second of audio, "
          f"first chunk ({FIRST_CHUNK_FRAMES * 80} ms) {1000 * result['first_chunk_s']:.0f} ms")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
