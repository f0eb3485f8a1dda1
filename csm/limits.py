"""Bounds on every config value that sizes a CSM model or its Mimi codec, checked as the config is read.

A checkpoint's config.json decides what is built before a single weight is read: the model's
modules (on the meta device) and a name-mapping rule per layer, and the codec's real tensors. A
config that says `num_hidden_layers: 1e9` would hang start-up, and an absurd `codec_config` would
exhaust memory, long before the weights could show that the config is wrong. So every sizing value
is checked here first, against what a CSM checkpoint can plausibly be: CSM-1B's sizes with
generous headroom (see the ranges below).

Counts must be whole numbers. Integral floats (`16.0`, as some tools write them) are taken as
ints; other floats, bools, strings and null are refused. A violation is a CheckpointError that
names the key, the value and the allowed range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from csm.hub import CheckpointError


@dataclass(frozen=True)
class Range:
    """Allowed values, both ends included."""

    low: int | float
    high: int | float

    def __str__(self) -> str:
        return f"[{self.low:,}, {self.high:,}]"


# The transformer stacks. CSM-1B: backbone 16 layers, 2048 wide, 32 heads / 8 KV heads, MLP 8192,
# 2048 positions; depth decoder 4 layers, 1024 wide, 8 / 2 heads, MLP 8192; text vocab 128,256;
# audio vocab 2051; 32 codebooks.
LAYERS = Range(1, 64)
WIDTH = Range(1, 16_384)
HEADS = Range(1, 256)
HEAD_DIM = Range(2, 1_024)
INTERMEDIATE = Range(1, 65_536)
# Not 65,536: setup_caches allocates a positions x positions causal mask (256 MiB at 16,384, 4 GiB at 65,536).
POSITIONS = Range(1, 16_384)
TEXT_VOCAB = Range(1, 1_048_576)
AUDIO_VOCAB = Range(1, 65_536)
CODEBOOKS = Range(1, 64)
# Values that size nothing but feed arithmetic (RoPE, norms): bounded so they stay finite and positive.
NORM_EPS = Range(1e-12, 1.0)
ROPE_THETA = Range(1.0, 1e12)
ROPE_FACTOR = Range(1e-6, 1e6)
ROPE_POSITIONS = Range(1, 1_048_576)

# Our TransformerArgs field -> the key for it in a transformers (Llama-style) config.
TRANSFORMERS_KEYS = dict(
    num_layers="num_hidden_layers", num_heads="num_attention_heads", num_kv_heads="num_key_value_heads",
    embed_dim="hidden_size", intermediate_dim="intermediate_size", max_seq_len="max_position_embeddings",
    norm_eps="rms_norm_eps", head_dim="head_dim",
)  # fmt: skip
# The original layout's explicit flavors use the field names themselves.
ORIGINAL_KEYS = {field: field for field in TRANSFORMERS_KEYS}

_REQUIRED = object()


class ConfigReader:
    """Reads values out of one config dict, each checked; errors name the key as `prefix` + key."""

    def __init__(self, values, where: str, prefix: str = ""):
        if not isinstance(values, dict):
            what = prefix.rstrip(".") or "the config"
            raise CheckpointError(f"{where}: {what} must be a JSON object, got {shown_value(values)}.")
        self.values, self.where, self.prefix = values, where, prefix

    def count(self, key: str, allowed: Range, default=_REQUIRED) -> int:
        """A whole number in `allowed`; `default` (trusted, not checked) when the key is absent or null."""
        value = self.values.get(key)
        if value is None:
            return self._default(key, default)
        whole = _as_int(value)
        if whole is None or not allowed.low <= whole <= allowed.high:
            self.fail(key, value, f"a whole number in {allowed}")
        return whole

    def number(self, key: str, allowed: Range, default=_REQUIRED) -> float:
        """A finite number in `allowed`, as a float; `default` when the key is absent or null."""
        value = self.values.get(key)
        if value is None:
            return self._default(key, default)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or not allowed.low <= value <= allowed.high:
            self.fail(key, value, f"a number in {allowed}")
        return float(value)

    def sub(self, key: str) -> ConfigReader:
        """The reader of a nested object, e.g. `depth_decoder_config`."""
        return ConfigReader(self.values.get(key, {}), self.where, f"{self.prefix}{key}.")

    def fail(self, key: str, value, rule: str):
        raise CheckpointError(f"{self.where}: {self.prefix}{key} must be {rule}, got {shown_value(value)}.")

    def _default(self, key: str, default):
        if default is _REQUIRED:
            raise CheckpointError(f"{self.where}: {self.prefix}{key} is missing.")
        return default


def _as_int(value) -> int | None:
    """`value` as an int if it is a whole number (an int, or an integral float); else None."""
    if isinstance(value, bool):  # a bool is an int to Python, never a size to a config
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def shown_value(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def read_stack(read: ConfigReader, keys: dict[str, str], default_positions: int | None = None) -> dict:
    """The sizes of one transformer stack (TransformerArgs keyword arguments, rope aside), checked.

    `keys` maps each field to its key in this config (TRANSFORMERS_KEYS or ORIGINAL_KEYS).
    """
    positions = _REQUIRED if default_positions is None else default_positions
    sizes = dict(
        num_layers=read.count(keys["num_layers"], LAYERS),
        num_heads=read.count(keys["num_heads"], HEADS),
        embed_dim=read.count(keys["embed_dim"], WIDTH),
        intermediate_dim=read.count(keys["intermediate_dim"], INTERMEDIATE),
        max_seq_len=read.count(keys["max_seq_len"], POSITIONS, positions),
        norm_eps=read.number(keys["norm_eps"], NORM_EPS, 1e-5),
        head_dim=read.count(keys["head_dim"], HEAD_DIM, None),
    )
    heads = sizes["num_heads"]
    sizes["num_kv_heads"] = kv_heads = read.count(keys["num_kv_heads"], HEADS, heads)
    if heads % kv_heads:
        read.fail(keys["num_kv_heads"], kv_heads, f"a divisor of {keys['num_heads']} ({heads})")
    if sizes["head_dim"] is None:  # derived as embed_dim // num_heads, so it has to come out whole
        if sizes["embed_dim"] % heads:
            read.fail(keys["num_heads"], heads, f"a divisor of {keys['embed_dim']} ({sizes['embed_dim']})")
        head_dim, head_dim_key = sizes["embed_dim"] // heads, f"{keys['embed_dim']} / {keys['num_heads']}"
    else:
        head_dim, head_dim_key = sizes["head_dim"], keys["head_dim"]
    if head_dim % 2 or not HEAD_DIM.low <= head_dim <= HEAD_DIM.high:  # RoPE rotates the two halves of each head
        read.fail(head_dim_key, head_dim, f"an even number in {HEAD_DIM}")
    return sizes


def read_llama3_scaling(read: ConfigReader, defaults: dict | None = None) -> dict:
    """RopeScaling keyword arguments from a llama3 rope section, checked; `defaults` fills absent keys."""
    defaults = defaults or {}
    factor, low, high = (
        read.number(key, ROPE_FACTOR, defaults.get(key, _REQUIRED))
        for key in ("factor", "low_freq_factor", "high_freq_factor")
    )
    if high <= low:  # the blend between the two wavelengths divides by their gap
        read.fail("high_freq_factor", high, f"above low_freq_factor ({low})")
    original = "original_max_position_embeddings"
    positions = read.count(original, ROPE_POSITIONS, defaults.get(original, _REQUIRED))
    return dict(factor=factor, low_freq_factor=low, high_freq_factor=high, **{original: positions})


# The Mimi codec (`codec_config`), built for real, in memory, before its weights are compared. kyutai/mimi
# has: 24 kHz, 12.5 frames/s, hidden 512, 64 filters, 1 residual layer, ratios [8, 6, 5, 4], kernels 7 / 3 / 3,
# dilation growth 2, 2048 codes of 256 dims in 32 quantizers (1 semantic), 8 transformer layers with 8 heads,
# MLP 2048, 8000 positions, a 250-step window.
MIMI_COUNTS = dict(
    sampling_rate=Range(1, 192_000), audio_channels=Range(1, 8), hidden_size=Range(1, 8_192),
    num_filters=Range(1, 1_024), num_residual_layers=Range(1, 4), kernel_size=Range(1, 64),
    last_kernel_size=Range(1, 64), residual_kernel_size=Range(1, 64),
    # The residual convs dilate by growth ** layer, so growth and layers together set the padding.
    dilation_growth_rate=Range(1, 4), compress=Range(1, 16), codebook_size=Range(2, 65_536),
    codebook_dim=Range(1, 8_192), num_quantizers=CODEBOOKS, num_semantic_quantizers=CODEBOOKS,
    vector_quantization_hidden_dimension=Range(1, 8_192), upsample_groups=Range(1, 8_192),
    num_hidden_layers=LAYERS, intermediate_size=INTERMEDIATE, num_attention_heads=HEADS,
    num_key_value_heads=HEADS, head_dim=HEAD_DIM, max_position_embeddings=Range(1, 65_536),
    sliding_window=Range(1, 65_536),
)  # fmt: skip
MIMI_FRAME_RATE = Range(0.5, 1_000.0)
MIMI_RATIOS = Range(1, 8)  # how many upsampling stages
MIMI_RATIO = Range(1, 64)


def check_codec_config(config, where: str) -> dict:
    """A Mimi `codec_config`, its sizing values checked (absent or null keys take Mimi's defaults).

    Returns a copy with integral floats made ints, as MimiConfig accepts only ints.
    """
    read = ConfigReader(config, where, "codec_config.")
    checked = dict(config)
    for key, allowed in MIMI_COUNTS.items():
        if config.get(key) is not None:
            checked[key] = read.count(key, allowed)
    for key in ("frame_rate", "_frame_rate"):  # transformers 5 saves it as _frame_rate
        read.number(key, MIMI_FRAME_RATE, None)
    ratios = config.get("upsampling_ratios")
    if ratios is not None:
        if not isinstance(ratios, list) or not MIMI_RATIOS.low <= len(ratios) <= MIMI_RATIOS.high:
            read.fail("upsampling_ratios", ratios, f"a list of {MIMI_RATIOS.low} to {MIMI_RATIOS.high} whole numbers")
        stages = ConfigReader(
            {f"[{i}]": ratio for i, ratio in enumerate(ratios)}, where, read.prefix + "upsampling_ratios"
        )
        checked["upsampling_ratios"] = [stages.count(f"[{i}]", MIMI_RATIO) for i in range(len(ratios))]
    heads = checked.get("num_attention_heads") or 8  # MimiConfig's default
    kv_heads = checked.get("num_key_value_heads") or heads
    if heads % kv_heads:
        read.fail("num_key_value_heads", kv_heads, f"a divisor of num_attention_heads ({heads})")
    return checked
