"""What automatic transcription costs: Whisper's encoder per 28 s piece, and its decoder per token.

A Whisper of the chosen model's shape (its config values, written here) with random weights, loaded
by studio.asr: the encoder does the same work as the trained model's (Whisper pads every piece to
30 s), and a decoding step costs what the trained model's does. Nothing is downloaded. How many
tokens a clip needs is the trained model's affair: about 1.4 per word of speech.

    python -m bench.asr --shape base.en --device cpu --json bench/out/asr-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from studio import asr

VOCAB = 51_866  # Whisper's (large-v3's; base.en's is 51,864)
# From openai/whisper-base.en's and openai/whisper-large-v3-turbo's config.json.
SHAPES = {
    "base.en": dict(d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
                    decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048, num_mel_bins=80),
    "large-v3-turbo": dict(d_model=1280, encoder_layers=32, decoder_layers=4, encoder_attention_heads=20,
                           decoder_attention_heads=20, encoder_ffn_dim=5120, decoder_ffn_dim=5120, num_mel_bins=128),
}  # fmt: skip


def build(shape: str, folder: Path) -> None:
    """The tiny Whisper's files (tokenizer, generation config) with the model swapped for one of `shape`."""
    from transformers import AutoTokenizer, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    from studio.tiny_whisper import build_tiny_whisper

    build_tiny_whisper(folder)
    generation = json.loads((folder / "generation_config.json").read_text())
    config = WhisperConfig.from_pretrained(folder).to_dict()
    config.update(SHAPES[shape], vocab_size=VOCAB, init_std=0.02)  # the real vocab's output layer
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = WhisperForConditionalGeneration(WhisperConfig(**config)).eval()
    # The end token's row and those past the tokenizer's score 0, below the best of the random ones: they are
    # never written (so every token asked for is), and still computed.
    known = len(AutoTokenizer.from_pretrained(folder))
    with torch.no_grad():
        model.model.decoder.embed_tokens.weight[known:] = 0
        model.model.decoder.embed_tokens.weight[generation["eos_token_id"]] = 0
    model.save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=SHAPES[shape]["num_mel_bins"]).save_pretrained(folder)
    generation["suppress_tokens"] = generation["suppress_tokens"][:89]  # as many as the real config (their cost)
    (folder / "generation_config.json").write_text(json.dumps(generation))


def time_parts(transcriber, repeats: int, tokens: int = 64) -> tuple[float, float]:
    """Seconds for one 28 s piece's features and encoder pass, and per token of greedy decoding with the
    KV cache (what generate does per token, without its bookkeeping). The least disturbed of `repeats`."""
    model, features = transcriber.pipe.model, transcriber.pipe.feature_extractor
    audio = (0.1 * np.random.default_rng(0).standard_normal(int(asr.PIECE_S * asr.ASR_RATE))).astype(np.float32)
    start = torch.tensor([[model.generation_config.decoder_start_token_id]])
    encode, decode = [], []
    with torch.inference_mode():
        for _ in range(repeats + 1):  # the first is a warm-up
            started = time.perf_counter()
            heard = model.model.encoder(features(audio, sampling_rate=asr.ASR_RATE, return_tensors="pt").input_features)
            encode.append(time.perf_counter() - started)
            started, ids, cache = time.perf_counter(), start, None
            for _ in range(tokens):
                out = model(encoder_outputs=heard, decoder_input_ids=ids, cache=cache, use_cache=True)
                ids, cache = out.logits[:, -1:].argmax(-1), out.past_key_values
            decode.append((time.perf_counter() - started) / tokens)
    return min(encode[1:]), min(decode[1:])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.asr", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="base.en")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch's CPU threads (default: torch's own)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        build(args.shape, Path(folder))
        transcriber = asr._build(folder, args.device)
        piece, per_token = time_parts(transcriber, args.repeats)
    result = {
        "shape": args.shape,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "beams": transcriber.beams,
        "load_average": [round(x, 2) for x in os.getloadavg()],  # other work on the machine slows it
        "piece_encoder_s": round(piece, 3),
        "per_token_s": round(per_token, 4),
        # A 10 s clip of about 25 words (~35 tokens): one piece (Whisper pads it to 30 s).
        "ten_second_clip_s": round(piece + 35 * per_token, 2),
        # A 180 s clip: 7 pieces, ~65 tokens each.
        "longest_clip_s": round(7 * (piece + 65 * per_token), 1),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
