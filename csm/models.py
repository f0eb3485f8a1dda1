"""The CSM model in plain PyTorch: a Llama-3.2 backbone over frames and a small depth decoder.

A frame has `num_codebooks + 1` columns: the audio codebooks, then one text token. A mask says which
columns are present; the embeddings of the present columns are summed into one vector per frame. The
backbone reads frames and predicts codebook 0 of the next frame; the depth decoder then predicts
codebooks 1..N-1 of that frame, one per step, from the projected backbone state. The public API
(`Model`, `ModelArgs`, `setup_caches`, `reset_caches`, `generate_frame`) matches the SesameAILabs/csm
reference. `csm.loading` loads weights (`from_pretrained`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class RopeScaling:
    """Llama-3 frequency scaling: long wavelengths are slowed down by `factor`."""

    factor: float = 32.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclass(frozen=True)
class TransformerArgs:
    """Sizes of one Llama-style decoder stack."""

    num_layers: int
    num_heads: int
    num_kv_heads: int
    embed_dim: int
    intermediate_dim: int
    max_seq_len: int = 2048
    norm_eps: float = 1e-5
    rope_base: float = 500_000.0
    rope_scaling: RopeScaling | None = field(default_factory=RopeScaling)
    head_dim: int | None = None  # None: embed_dim // num_heads; always an int once constructed

    def __post_init__(self):
        if self.head_dim is None:
            object.__setattr__(self, "head_dim", self.embed_dim // self.num_heads)  # frozen: set it once, here


# The two named sizes of the reference implementation.
FLAVORS: dict[str, TransformerArgs] = {
    "llama-1B": TransformerArgs(num_layers=16, num_heads=32, num_kv_heads=8, embed_dim=2048, intermediate_dim=8192),
    "llama-100M": TransformerArgs(num_layers=4, num_heads=8, num_kv_heads=2, embed_dim=1024, intermediate_dim=8192),
}


def resolve_flavor(flavor: str | TransformerArgs) -> TransformerArgs:
    if isinstance(flavor, TransformerArgs):
        return flavor
    if flavor not in FLAVORS:
        raise ValueError(f"unknown flavor {flavor!r}: use one of {sorted(FLAVORS)} or a TransformerArgs")
    return FLAVORS[flavor]


@dataclass
class ModelArgs:
    """CSM sizes. Flavors are names from FLAVORS or explicit TransformerArgs (read from a checkpoint)."""

    backbone_flavor: str | TransformerArgs = "llama-1B"
    decoder_flavor: str | TransformerArgs = "llama-100M"
    text_vocab_size: int = 128_256
    audio_vocab_size: int = 2051
    audio_num_codebooks: int = 32

    @property
    def backbone(self) -> TransformerArgs:
        return resolve_flavor(self.backbone_flavor)

    @property
    def decoder(self) -> TransformerArgs:
        return resolve_flavor(self.decoder_flavor)


# ---------------------------------------------------------------------------------------------
# Llama building blocks


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # Normalise in fp32 (bf16 loses too much in the mean of squares), scale in the input dtype. One
        # fused op, with the bits of x * rsqrt(mean(x^2) + eps): 280 norms a decode frame.
        return self.weight * F.rms_norm(x.float(), x.shape[-1:], eps=self.eps).to(x.dtype)


def rope_inverse_frequencies(args: TransformerArgs) -> Tensor:
    dim = args.head_dim
    inv_freq = 1.0 / (args.rope_base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    s = args.rope_scaling
    if s is None:
        return inv_freq
    low_freq_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_freq_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq)
    # Between the two wavelengths, blend smoothly from scaled to unscaled.
    smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
        s.high_freq_factor - s.low_freq_factor
    )
    blended = (1 - smooth) * scaled / s.factor + smooth * scaled
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(is_medium, blended, scaled)


def rope_tables(args: TransformerArgs, max_positions: int) -> tuple[Tensor, Tensor]:
    """cos and sin, [max_positions, head_dim], in the "rotate halves" channel order."""
    positions = torch.arange(max_positions, dtype=torch.float32)
    freqs = positions[:, None] * rope_inverse_frequencies(args)[None, :]
    freqs = torch.cat([freqs, freqs], dim=-1)
    return freqs.cos(), freqs.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    # x: [B, H, S, D]; cos/sin: [B, 1, S, D]. Channel i is paired with channel i + D/2.
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class KVCache(nn.Module):
    """A pre-allocated cache: one slot per position, written in place (static shapes for CUDA graphs)."""

    def __init__(self, batch_size: int, num_kv_heads: int, max_seq_len: int, head_dim: int, dtype, device):
        super().__init__()
        shape = (batch_size, num_kv_heads, max_seq_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, positions: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        # All rows of a batch advance together, so row 0's positions address every row. A batch may
        # use only the first rows (a batch-1 prefill in a cache set up for several takes).
        return self.k[: len(k)].index_copy_(2, positions, k), self.v[: len(v)].index_copy_(2, positions, v)

    def reset(self) -> None:
        self.k.zero_()
        self.v.zero_()


class Attention(nn.Module):
    def __init__(self, args: TransformerArgs):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = args.num_heads, args.num_kv_heads, args.head_dim
        q_dim, kv_dim = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        # q, k and v in one matmul: one kernel instead of three in the per-token decode step.
        self.qkv_proj = nn.Linear(args.embed_dim, q_dim + 2 * kv_dim, bias=False)
        self.o_proj = nn.Linear(q_dim, args.embed_dim, bias=False)
        self.kv_cache: KVCache | None = None

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor, positions: Tensor, filled: int | None
    ) -> Tensor:
        batch, seq, _ = x.shape
        heads = self.qkv_proj(x).view(batch, seq, -1, self.head_dim).transpose(1, 2)  # [B, H + 2 KV, S, hd]
        # q and k rotated as one tensor: half the small ops of a decode step's rope, the same bits.
        qk = apply_rope(heads[:, : self.num_heads + self.num_kv_heads], cos, sin)
        q, k, v = qk[:, : self.num_heads], qk[:, self.num_heads :], heads[:, self.num_heads + self.num_kv_heads :]
        k, v = self.kv_cache.update(positions, k, v)
        if filled is not None:  # attend over the written slots only (see Transformer.forward)
            k, v = k[:, :, :filled], v[:, :, :filled]
            if seq == 1:
                # One query sees every written slot, so no mask; the query heads that share a KV
                # head attend together as rows of one product, without repeating K and V.
                group = self.num_heads // self.num_kv_heads
                q = q.reshape(batch, self.num_kv_heads, group, self.head_dim)
                y = F.scaled_dot_product_attention(q, k, v).reshape(batch, self.num_heads, 1, self.head_dim)
                return self.o_proj(y.transpose(1, 2).reshape(batch, seq, -1))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=self.num_heads != self.num_kv_heads)
        return self.o_proj(y.transpose(1, 2).reshape(batch, seq, -1))


class MLP(nn.Module):
    def __init__(self, args: TransformerArgs):
        super().__init__()
        self.intermediate_dim = args.intermediate_dim
        self.gate_up_proj = nn.Linear(args.embed_dim, 2 * args.intermediate_dim, bias=False)  # fused, as qkv
        self.down_proj = nn.Linear(args.intermediate_dim, args.embed_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up_proj(x).split(self.intermediate_dim, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, args: TransformerArgs):
        super().__init__()
        self.attn_norm = RMSNorm(args.embed_dim, args.norm_eps)
        self.attn = Attention(args)
        self.mlp_norm = RMSNorm(args.embed_dim, args.norm_eps)
        self.mlp = MLP(args)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor, positions: Tensor, filled: int | None
    ) -> Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, mask, positions, filled)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    """A Llama stack over input embeddings (no token embedding, no output head), with a static KV cache."""

    def __init__(self, args: TransformerArgs):
        super().__init__()
        self.args = args
        self.layers = nn.ModuleList(Block(args) for _ in range(args.num_layers))
        self.norm = RMSNorm(args.embed_dim, args.norm_eps)
        self.cache_len = 0
        self.attend_written_only = True  # CPU: see forward; off in tests (the plain path) and csm.compiling

    def setup_cache(self, batch_size: int, max_seq_len: int, dtype, device) -> None:
        for layer in self.layers:
            layer.attn.kv_cache = KVCache(
                batch_size, self.args.num_kv_heads, max_seq_len, self.args.head_dim, dtype, device
            )
        cos, sin = rope_tables(self.args, max_seq_len)
        self.register_buffer("rope_cos", cos.to(device), persistent=False)
        self.register_buffer("rope_sin", sin.to(device), persistent=False)
        causal = torch.tril(torch.ones(max_seq_len, max_seq_len, dtype=torch.bool, device=device))
        self.register_buffer("causal_mask", causal, persistent=False)
        self.cache_len = max_seq_len

    def forward(self, x: Tensor, input_pos: Tensor) -> Tensor:
        """x: [B, S, D] embeddings at positions input_pos [B, S]; returns normed hidden states."""
        if self.cache_len == 0:
            raise RuntimeError("caches are not set up: call model.setup_caches(max_batch_size) first")
        mask = self.causal_mask[input_pos].unsqueeze(1)  # [B, 1, S, cache_len]
        cos = self.rope_cos[input_pos].to(x.dtype).unsqueeze(1)
        sin = self.rope_sin[input_pos].to(x.dtype).unsqueeze(1)
        positions = input_pos[0]
        filled = None
        if self.attend_written_only and x.device.type == "cpu":
            # On the CPU, reading the last position costs nothing, and attending over the written
            # slots only (a 312-frame prompt, not all 2048) is much cheaper. On CUDA the full cache
            # keeps shapes static for graph capture, and reading the position would sync.
            filled = int(positions.max()) + 1
            mask = mask[..., :filled]
        for layer in self.layers:
            x = layer(x, cos, sin, mask, positions, filled)
        return self.norm(x)

    def reset_cache(self) -> None:
        for layer in self.layers:
            if layer.attn.kv_cache is not None:
                layer.attn.kv_cache.reset()


# ---------------------------------------------------------------------------------------------
# Sampling


def sample_topk(logits: Tensor, topk: int, temperature: float) -> Tensor:
    """[B, V] logits -> [B, 1] ids. topk=1 is exactly greedy (argmax, temperature ignored)."""
    if topk == 1:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    kth_best = torch.topk(logits, min(topk, logits.size(-1)), dim=-1).values[..., -1:]
    probs = torch.softmax(logits.masked_fill(logits < kth_best, float("-inf")), dim=-1)
    # argmax(p / Exp(1)) is a draw from p; unlike torch.multinomial it never syncs with the host.
    noise = torch.empty_like(probs).exponential_(1)
    return (probs / noise).argmax(dim=-1, keepdim=True)


# ---------------------------------------------------------------------------------------------
# CSM


class Model(nn.Module):
    def __init__(self, config: ModelArgs):
        super().__init__()
        self.config = config
        backbone, decoder = config.backbone, config.decoder
        self.num_codebooks = config.audio_num_codebooks
        self.audio_vocab_size = config.audio_vocab_size

        self.backbone = Transformer(backbone)
        self.decoder = Transformer(decoder)
        self.text_embeddings = nn.Embedding(config.text_vocab_size, backbone.embed_dim)
        # One table for all codebooks: codebook i uses rows [i * vocab, (i + 1) * vocab).
        self.audio_embeddings = nn.Embedding(config.audio_vocab_size * self.num_codebooks, backbone.embed_dim)
        self.projection = nn.Linear(backbone.embed_dim, decoder.embed_dim, bias=False)
        self.codebook0_head = nn.Linear(backbone.embed_dim, config.audio_vocab_size, bias=False)
        self.audio_head = nn.Parameter(torch.empty(self.num_codebooks - 1, decoder.embed_dim, config.audio_vocab_size))
        self.cache_epoch = 0  # +1 per cache set-up or reset: tells the generator the KV it kept may be gone

    @classmethod
    def from_pretrained(cls, name_or_path: str, revision=None, *, token=None, **options) -> "Model":
        """Load a checkpoint (Hub repo id or local folder) in either layout. `options`: csm.loading.load_model's
        (device, dtype, quantize, compile_decoder)."""
        from csm import loading

        return loading.load_model(loading.resolve_checkpoint(name_or_path, revision=revision, token=token), **options)

    @property
    def device(self) -> torch.device:
        return self.backbone.norm.weight.device  # a norm is never packed or quantized

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.norm.weight.dtype

    @property
    def max_seq_len(self) -> int:
        return self.config.backbone.max_seq_len

    def setup_caches(self, max_batch_size: int) -> None:
        """Allocate the KV caches: the backbone holds max_seq_len frames, the decoder one frame's codebooks."""
        self.backbone.setup_cache(max_batch_size, self.max_seq_len, self.dtype, self.device)
        self.decoder.setup_cache(max_batch_size, self.num_codebooks, self.dtype, self.device)
        self.cache_epoch += 1

    def reset_caches(self) -> None:
        self.backbone.reset_cache()
        self.decoder.reset_cache()
        self.cache_epoch += 1

    # -- embeddings -----------------------------------------------------------------------------

    def embed_audio(self, codebook: int, tokens: Tensor) -> Tensor:
        return self.audio_embeddings(tokens + codebook * self.audio_vocab_size)

    def embed_codebooks(self, codes: Tensor) -> Tensor:
        """[..., K] codes of codebooks 0..K-1 -> [..., K, D] embeddings (not summed)."""
        offsets = torch.arange(codes.shape[-1], device=codes.device) * self.audio_vocab_size
        return self.audio_embeddings(codes + offsets)

    def embed_frames(self, tokens: Tensor, tokens_mask: Tensor, block: int = 32) -> Tensor:
        """[B, S, N+1] tokens and mask -> [B, S, D]: the sum of the present columns' embeddings."""
        if tokens.shape[1] > block:  # `block` frames at a time, the same sums: a prompt's at once is 3 x 42 MB
            pieces = zip(tokens.split(block, 1), tokens_mask.split(block, 1))
            return torch.cat([self.embed_frames(t, m, block) for t, m in pieces], dim=1)
        text = self.text_embeddings(tokens[:, :, -1]).unsqueeze(-2)
        audio = self.embed_codebooks(tokens[:, :, :-1])
        embeds = torch.cat([audio, text], dim=-2)
        return (embeds * tokens_mask.unsqueeze(-1).to(embeds.dtype)).sum(dim=2)

    # -- the two stages ---------------------------------------------------------------------------

    def backbone_hidden(self, tokens: Tensor, tokens_mask: Tensor, input_pos: Tensor) -> Tensor:
        """Run the backbone over frames (filling its cache); returns normed hidden states [B, S, D]."""
        return self.backbone(self.embed_frames(tokens, tokens_mask), input_pos)

    def decoder_logits(self, backbone_last: Tensor, codes: Tensor) -> Tensor:
        """Teacher-forced depth decoder: logits [B, N-1, V] for codebooks 1..N-1 given codes [B, N]."""
        inputs = torch.cat([backbone_last.unsqueeze(1), self.embed_codebooks(codes[:, :-1])], dim=1)
        positions = torch.arange(self.num_codebooks, device=codes.device).expand(codes.shape[0], -1)
        hidden = self.decoder(self.projection(inputs), positions)[:, 1:]
        return torch.stack([self.codebook_logits(hidden[:, i], i + 1) for i in range(hidden.shape[1])], dim=1)

    def codebook_logits(self, hidden: Tensor, codebook: int) -> Tensor:
        """Logits [B, V] of codebook 1..N-1 from the depth decoder's state [B, D]."""
        if isinstance(self.audio_head, Tensor):
            return hidden @ self.audio_head[codebook - 1]
        return self.audio_head(hidden, codebook - 1)  # packed or int8 heads (csm.packing, csm.quantize)

    def decoder_step(self, inputs: Tensor, positions: Tensor) -> Tensor:
        """Inputs [B, S, D] at decoder positions [B, S] -> the last one's state [B, D_dec]; see csm.compiling."""
        return self.decoder(self.projection(inputs), positions)[:, -1]

    @torch.inference_mode()
    def generate_frame(
        self, tokens: Tensor, tokens_mask: Tensor, input_pos: Tensor, temperature: float, topk: int
    ) -> Tensor:
        """Feed frames [B, S, N+1] at input_pos [B, S]; sample the next frame's N codebooks -> [B, N]."""
        return self.sample_frame(self.backbone_hidden(tokens, tokens_mask, input_pos)[:, -1], temperature, topk)

    def sample_frame(self, last: Tensor, temperature: float, topk: int) -> Tensor:
        """Codebook 0 from the backbone state [B, D], then codebooks 1..N-1 from the depth decoder."""
        codes = [sample_topk(self.codebook0_head(last), topk, temperature)]
        # The decoder restarts at position 0 every frame: [backbone state, codebook 0], then one per step.
        decoder_input = torch.cat([last.unsqueeze(1), self.embed_audio(0, codes[0])], dim=1)
        positions = torch.arange(2, device=last.device).expand(last.shape[0], -1)
        for i in range(1, self.num_codebooks):
            hidden = self.decoder_step(decoder_input, positions)
            codes.append(sample_topk(self.codebook_logits(hidden, i), topk, temperature))
            decoder_input = self.embed_audio(i, codes[-1])
            positions = positions[:, -1:] + 1
        return torch.cat(codes, dim=1)
