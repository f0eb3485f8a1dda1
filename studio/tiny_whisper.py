"""A tiny random Whisper, built offline, in the layout of openai/whisper-base.en.

`--model tiny` and the tests transcribe with it through the same pipeline code as the real one,
loaded by folder. Its weights are random: its text is nonsense, never a transcript.

The folder holds what a Hub Whisper holds: `config.json` (a `WhisperConfig` with tiny widths and
depths but Whisper's 80 mel bins and 30 s window), `generation_config.json`, `model.safetensors`,
`preprocessor_config.json` (Whisper's feature extractor) and `tokenizer.json` /
`tokenizer_config.json` of a small byte-level BPE trained here, with Whisper's special tokens
(English-only, as the `.en` models) and its 1501 timestamp tokens after it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

TINY_WHISPER_VERSION = 1  # bump when the files change, so cached folders are rebuilt
MARKER_FILE = "csm_studio.json"
BPE_VOCAB = 400
EOT = "<|endoftext|>"
# Whisper's special tokens after its text vocab, in its order (English-only: one language), then timestamps.
SPECIAL = [EOT, "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>", "<|startoflm|>",
           "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]  # fmt: skip
TIMESTAMPS = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
WIDTHS = dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
              encoder_ffn_dim=64, decoder_ffn_dim=64)  # fmt: skip
INIT_STD = 0.5  # not Whisper's 0.02: weights this large make what it writes depend on what it hears
CORPUS = """\
Hello there, how are you doing today?
I did! The tomatoes are finally turning red.
Let's meet at seven o'clock in front of the library.
Could you tell me where the nearest train station is?
Honestly, I have no idea, but it was really catchy.
"""


def build_tiny_whisper_tokenizer():
    """A byte-level BPE (like Whisper's GPT-2 one) with Whisper's special and timestamp tokens after it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(CORPUS.splitlines(), trainer)
    tokenizer.add_special_tokens(SPECIAL)
    tokenizer.add_tokens(TIMESTAMPS)  # as Whisper's: added, but not special (decoding keeps them as text)
    return tokenizer


def generation_config(tokenizer) -> dict:
    """What openai/whisper-base.en's generation_config.json says, for this vocab. Besides Whisper's own
    suppressions, every special and timestamp token but the end, and every byte that is not printable ASCII are
    suppressed, so the random model's nonsense is at least readable text."""
    ids = {token: tokenizer.token_to_id(token) for token in SPECIAL}
    texts = [tokenizer.decode([i]) for i in range(ids[EOT])]
    unprintable = [i for i, text in enumerate(texts) if not (text.isascii() and text.isprintable())]
    after_text = range(ids[EOT] + 1, tokenizer.get_vocab_size(with_added_tokens=True))  # specials, timestamps
    return {
        "begin_suppress_tokens": [tokenizer.token_to_id("Ġ"), ids[EOT]],
        "bos_token_id": ids["<|startoftranscript|>"],
        "decoder_start_token_id": ids["<|startoftranscript|>"],
        "eos_token_id": ids[EOT],
        "pad_token_id": ids[EOT],
        "is_multilingual": False,
        "max_initial_timestamp_index": 50,
        "no_timestamps_token_id": ids["<|notimestamps|>"],
        "prev_sot_token_id": ids["<|startofprev|>"],
        "return_timestamps": False,
        "suppress_tokens": sorted([*unprintable, *after_text]),
    }


def build_tiny_whisper(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny random Whisper into `folder`; the caller's torch RNG state is left untouched."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    from csm.tiny import _quiet_transformers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_whisper_tokenizer()
    generation = generation_config(tokenizer)
    config = WhisperConfig(
        vocab_size=tokenizer.get_vocab_size(with_added_tokens=True), num_mel_bins=80, max_source_positions=1500,
        max_target_positions=448, init_std=INIT_STD, **WIDTHS, **{k: generation[k] for k in (
            "bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")},
    )  # fmt: skip
    with _quiet_transformers(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        WhisperForConditionalGeneration(config).eval().save_pretrained(folder)
    (folder / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    WhisperTokenizer(tokenizer_object=tokenizer, language=None).save_pretrained(folder)
    marker = {"csm_studio_tiny": True, "note": "random weights: its text is nonsense", "seed": seed,
              "version": TINY_WHISPER_VERSION}  # fmt: skip
    (folder / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
    return folder


def tiny_whisper_dir(seed: int = 0) -> Path:
    """The tiny Whisper, built on first use next to the tiny CSM checkpoint, and renamed into place
    whole, so concurrent processes never see a half-written one."""
    from csm.tiny import built_once, cache_root

    final = cache_root() / f"tiny-whisper-seed{seed}-v{TINY_WHISPER_VERSION}"
    return built_once(final, lambda folder: build_tiny_whisper(folder, seed=seed), MARKER_FILE)
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        build_tiny_whisper(scratch, seed=seed)
        os.rename(scratch, final)
    except OSError:
        if not (final / MARKER_FILE).is_file():  # not "someone else got there first"
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return final
