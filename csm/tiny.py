"""A tiny random CSM checkpoint, built offline, in the transformers layout of sesame/csm-1b.

It lets tests and the demo exercise the whole path (tokenizer, loading, generation, Mimi decoding)
without the 6 GB gated download. Everything is random: it produces noise, never speech.

The folder holds what the Hub repo holds: `config.json` (a `CsmConfig` with a tiny Mimi as
`codec_config`), `generation_config.json`, `model.safetensors` (incl. `codec_model.*`), and
`tokenizer.json` / `tokenizer_config.json` / `special_tokens_map.json` of a small byte-level BPE
trained here on a few sentences. It also holds `README.md` and `csm_studio.json`
(`{"csm_studio_tiny": true, ...}`) so an app can say that the output is noise.

Shapes follow the real model where it is cheap: 24 kHz audio, 12.5 frames/s (1920 samples a
frame), audio vocab = codebook size + 3, llama3 rope scaling, special text tokens at the end of
the text vocab. Only widths, depths and the number of codebooks are small.

    python -m csm.tiny OUTDIR       # build into OUTDIR and print its path
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

TINY_VERSION = 1  # bump when the files change, so cached folders are rebuilt
MARKER_FILE = "csm_studio.json"
SAMPLE_RATE = 24_000
SAMPLES_PER_FRAME = 1920  # 8*6*5*4 = 960 samples per 25 Hz encoder step, then a stride-2 downsample
CODEBOOK_SIZE = 2048  # as Mimi: codes are 11-bit

BOS, EOS, AUDIO, AUDIO_EOS = "<|begin_of_text|>", "<|end_of_text|>", "<|AUDIO|>", "<|audio_eos|>"
# In this order at the end of the vocab, like Llama-3's 128000..128003 (sesame/csm-1b renamed
# 128002/128003 to the audio tokens its transformers processor uses).
SPECIAL_TOKENS = (BOS, EOS, AUDIO, AUDIO_EOS)
BPE_VOCAB = 508  # + 4 special tokens = 512

LLAMA3_ROPE = dict(
    rope_type="llama3", rope_theta=500_000.0, factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
    original_max_position_embeddings=8192,
)  # fmt: skip

# Llama-3's pre-tokenizer split: contractions, words, 1-3 digit groups, punctuation, spaces.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

CORPUS = """\
Hello there, how are you doing today?
I'm doing well, thanks for asking. How about you?
The quick brown fox jumps over the lazy dog.
I think we should talk about the weather before it rains again.
Yes, that sounds like a good idea to me!
Could you tell me where the nearest train station is?
It's just around the corner, past the little coffee shop.
We went to the beach last summer and the water was warm.
Do you remember the name of that song we heard yesterday?
Honestly, I have no idea, but it was really catchy.
Let's meet at seven o'clock in front of the library.
She said the meeting has been moved to Thursday afternoon.
What a beautiful morning! The sun is finally shining.
My favourite number is 42, and my second favourite is 1,024.
Thank you so much, that was very kind of you.
Hmm, I'm not sure. Let me think about it for a second.
"""

README = """\
# Tiny random CSM checkpoint (csm-studio)

Built offline by `csm.tiny` (seed {seed}, {num_codebooks} codebooks, format version {version}).
It has the files and layout of sesame/csm-1b (transformers layout) but tiny random weights and
a toy tokenizer: **it produces noise, not speech.** Use it for tests and demos only.
"""


# ---------------------------------------------------------------------------------------------
# Tokenizer


def build_tiny_tokenizer():
    """A byte-level BPE with Llama-3's pre-tokenizer and special tokens, trained on `CORPUS`.

    The post-processor adds BOS and EOS like the reference CSM code's, so callers that add their own
    markers are checked for doubling. Training is deterministic: same corpus, same merges.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(CORPUS.splitlines(), trainer)
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))  # appended after the BPE vocab
    bos, eos = tokenizer.token_to_id(BOS), tokenizer.token_to_id(EOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}",
        pair=f"{BOS} $A {EOS} {BOS}:1 $B:1 {EOS}:1",
        special_tokens=[(BOS, bos), (EOS, eos)],
    )
    return tokenizer


def _save_tokenizer(tokenizer, folder: Path) -> None:
    tokenizer.save(str(folder / "tokenizer.json"))
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": AUDIO}
    _write_json(folder / "special_tokens_map.json", special)
    _write_json(
        folder / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **special,
            "audio_token": AUDIO,
            "audio_eos_token": AUDIO_EOS,
            "model_max_length": 2048,
            "clean_up_tokenization_spaces": False,
        },
    )


# ---------------------------------------------------------------------------------------------
# Configs


def build_tiny_mimi_config(num_codebooks: int = 8, **overrides) -> dict:
    """A `MimiConfig` dict: real rates (24 kHz, 12.5 Hz, 2048 codes), ~3M parameters instead of ~80M.

    Decoding 50 frames (4 s) takes ~30-80 ms on 2 CPU threads. `num_filters` is not smaller on
    purpose: with fewer than ~48 channels in the last upsampling layers, oneDNN's CPU
    ConvTranspose1d spends 0.2-0.7 s building a kernel for every new number of frames.
    """
    config = dict(
        model_type="mimi",
        sampling_rate=SAMPLE_RATE,
        frame_rate=SAMPLE_RATE / SAMPLES_PER_FRAME,
        upsampling_ratios=[8, 6, 5, 4],
        audio_channels=1,
        num_filters=24,
        num_residual_layers=1,
        hidden_size=32,
        upsample_groups=32,  # depthwise upsampling, as in Mimi (groups = hidden_size)
        num_hidden_layers=1,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=4,
        codebook_size=CODEBOOK_SIZE,
        codebook_dim=16,
        vector_quantization_hidden_dimension=16,
        num_quantizers=num_codebooks,
        num_semantic_quantizers=1,
    )
    return {**config, **overrides}


def build_tiny_csm_config(text_vocab_size: int, special_ids: dict[str, int], num_codebooks: int = 8) -> dict:
    """A `CsmConfig` dict for the tiny model; `special_ids` maps the special tokens to their ids."""
    audio_vocab = CODEBOOK_SIZE + 3  # + padding and two unused ids, like sesame/csm-1b (2051)
    return dict(
        num_codebooks=num_codebooks,
        vocab_size=audio_vocab,
        text_vocab_size=text_vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rope_parameters=dict(LLAMA3_ROPE),
        # The real ids (128000+) do not exist in the tiny vocab.
        bos_token_id=special_ids[BOS],
        pad_token_id=special_ids[AUDIO],
        audio_token_id=special_ids[AUDIO],
        audio_eos_token_id=special_ids[AUDIO_EOS],
        codebook_pad_token_id=audio_vocab - 1,
        codebook_eos_token_id=0,
        tie_codebooks_embeddings=True,
        depth_decoder_config=dict(
            num_codebooks=num_codebooks,
            backbone_hidden_size=64,
            vocab_size=audio_vocab,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=num_codebooks,
            rope_parameters=dict(LLAMA3_ROPE),
        ),
        codec_config=build_tiny_mimi_config(num_codebooks),
    )


# ---------------------------------------------------------------------------------------------
# Checkpoint


def build_tiny_checkpoint(folder: str | Path, seed: int = 0, num_codebooks: int = 8) -> Path:
    """Write a complete tiny random checkpoint into `folder` (created if needed) and return its path.

    The same seed gives byte-identical files; the caller's torch RNG state is left untouched.
    """
    from transformers import CsmConfig, CsmForConditionalGeneration

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    special_ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
    config = build_tiny_csm_config(tokenizer.get_vocab_size(with_added_tokens=True), special_ids, num_codebooks)

    with _quiet_transformers(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CsmForConditionalGeneration(CsmConfig(**config)).eval()
        _randomize_constants(model, seed)
        model.save_pretrained(folder, state_dict=_untied_state_dict(model))
    _fix_frame_rate_key(folder / "config.json")

    _save_tokenizer(tokenizer, folder)
    (folder / "README.md").write_text(README.format(seed=seed, num_codebooks=num_codebooks, version=TINY_VERSION))
    _write_json(
        folder / MARKER_FILE,
        {
            "csm_studio_tiny": True,
            "note": "random weights: produces noise, not speech",
            "seed": seed,
            "num_codebooks": num_codebooks,
            "version": TINY_VERSION,
        },
    )
    return folder


def is_tiny_checkpoint(folder: str | Path) -> bool:
    """Whether `folder` was built by `build_tiny_checkpoint` (so its audio is noise)."""
    try:
        return bool(json.loads((Path(folder) / MARKER_FILE).read_text()).get("csm_studio_tiny"))
    except (OSError, ValueError):
        return False


def tiny_checkpoint_dir(seed: int = 0, num_codebooks: int = 8) -> Path:
    """A cached tiny checkpoint, built on first use under `cache_root()`."""
    final = cache_root() / f"tiny-seed{seed}-cb{num_codebooks}-v{TINY_VERSION}"
    return built_once(final, lambda folder: build_tiny_checkpoint(folder, seed=seed, num_codebooks=num_codebooks))


def built_once(final: Path, build, marker: str = MARKER_FILE) -> Path:
    """`final`, built by `build(folder)` unless it holds `marker` already. Built in a temporary folder and
    renamed into place, so concurrent processes never see a half-written one: the first rename wins, the
    others discard their copy."""
    if (final / marker).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        build(scratch)
        os.rename(scratch, final)
    except OSError:
        if not (final / marker).is_file():  # not "someone else got there first"
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return final


def cache_root() -> Path:
    """`$CSM_STUDIO_CACHE`, else `$XDG_CACHE_HOME/csm-studio`, else `~/.cache/csm-studio`."""
    if os.environ.get("CSM_STUDIO_CACHE"):
        return Path(os.environ["CSM_STUDIO_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "csm-studio"


def _randomize_constants(model: torch.nn.Module, seed: int) -> None:
    """Give every constant-initialised tensor random values.

    Norm weights start at 1, norm biases at 0 and Mimi's codebooks at 0: a loader that forgot
    one of them would go unnoticed. Random values make every tensor count, and codebooks that
    differ make different codes decode to different audio.
    """
    from transformers.models.mimi.modeling_mimi import MimiEuclideanCodebook

    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in model.parameters():
            first = param.flatten()[0]
            if param.numel() > 1 and bool((param == first).all()):
                scale = 0.1 * abs(first.item()) or 0.02
                param.add_(scale * torch.randn(param.shape, generator=generator))
        for codebook in model.modules():
            if isinstance(codebook, MimiEuclideanCodebook):
                codebook.embed_sum.normal_(generator=generator)
                # Mimi stores sums and usage counts; the centroid is their ratio.
                codebook.cluster_usage.uniform_(0.5, 2.0, generator=generator)
                codebook._embed = None
        # Random convolutions make noise well beyond [-1, 1]; scale it to a listenable level
        # (std ~0.05, peaks ~0.4).
        last_conv = model.codec_model.decoder.decoder_seanet.layers[-1].conv
        last_conv.weight.mul_(0.02)
        last_conv.bias.mul_(0.02)


def _untied_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with the tied audio embedding stored under both names.

    sesame/csm-1b's model.safetensors holds the backbone's and the depth decoder's audio
    embeddings as two equal tensors; safetensors cannot store aliases, so save_pretrained would
    keep only one. A separate copy keeps both, as in the real file.
    """
    state = model.state_dict()
    backbone = "backbone_model.embed_tokens.embed_audio_tokens.weight"
    state[backbone] = state[backbone].clone()
    return state


def _fix_frame_rate_key(config_path: Path) -> None:
    """transformers 5 writes Mimi's `frame_rate` as `_frame_rate`; the Hub config says `frame_rate`."""
    config = json.loads(config_path.read_text())
    codec = config["codec_config"]
    if "_frame_rate" in codec:
        codec["frame_rate"] = codec.pop("_frame_rate")
        codec = dict(sorted(codec.items()))
        config["codec_config"] = codec
        _write_json(config_path, config)


@contextlib.contextmanager
def _quiet_transformers():
    """Hide the build's progress bar and config warnings (the real config triggers the same ones)."""
    from transformers.utils import logging

    verbosity, bar = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bar:
            logging.enable_progress_bar()


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m csm.tiny", description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", help="folder to write the checkpoint into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-codebooks", type=int, default=8)
    args = parser.parse_args(argv)
    print(build_tiny_checkpoint(args.outdir, seed=args.seed, num_codebooks=args.num_codebooks).resolve())


if __name__ == "__main__":
    sys.exit(main())
