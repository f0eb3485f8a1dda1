"""Small random CSM checkpoints built with transformers (the oracle), and rewrites into the original layout."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import CsmConfig, CsmForConditionalGeneration

# A codec small enough to build in milliseconds; the model tests never run it.
TINY_CODEC = dict(
    model_type="mimi", hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
    intermediate_size=64, num_filters=4, codebook_dim=16, codebook_size=64, num_quantizers=8,
    num_semantic_quantizers=1, head_dim=16, upsample_groups=32,
)  # fmt: skip

LLAMA3_ROPE = dict(
    rope_type="llama3", rope_theta=500_000.0, factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
    original_max_position_embeddings=8192,
)  # fmt: skip

# Different widths, head counts (GQA and plain MHA), codebook counts, rope scaling on and off.
CONFIGS = {
    "gqa-llama3": dict(
        num_codebooks=4, hidden=64, heads=4, kv_heads=2, dec_hidden=32, dec_heads=4, dec_kv_heads=2, rope=LLAMA3_ROPE
    ),
    "wide-norope-scaling": dict(
        num_codebooks=8, hidden=96, heads=6, kv_heads=3, dec_hidden=48, dec_heads=3, dec_kv_heads=1, rope=None
    ),
    "mha-llama3-short": dict(
        num_codebooks=3, hidden=48, heads=2, kv_heads=2, dec_hidden=64, dec_heads=4, dec_kv_heads=4,
        rope=dict(LLAMA3_ROPE, factor=8.0, original_max_position_embeddings=64, rope_theta=10_000.0),
    ),
}  # fmt: skip

AUDIO_VOCAB = 67
TEXT_VOCAB = 100


def build_oracle(name: str, seed: int = 0) -> CsmForConditionalGeneration:
    c = CONFIGS[name]
    rope = c["rope"] or dict(rope_type="default", rope_theta=500_000.0)
    config = CsmConfig(
        num_codebooks=c["num_codebooks"], vocab_size=AUDIO_VOCAB, text_vocab_size=TEXT_VOCAB,
        hidden_size=c["hidden"], intermediate_size=2 * c["hidden"], num_hidden_layers=2,
        num_attention_heads=c["heads"], num_key_value_heads=c["kv_heads"], rope_parameters=dict(rope),
        depth_decoder_config=dict(
            num_codebooks=c["num_codebooks"], backbone_hidden_size=c["hidden"], vocab_size=AUDIO_VOCAB,
            hidden_size=c["dec_hidden"], intermediate_size=3 * c["dec_hidden"], num_hidden_layers=2,
            num_attention_heads=c["dec_heads"], num_key_value_heads=c["dec_kv_heads"],
            max_position_embeddings=c["num_codebooks"], rope_parameters=dict(rope),
        ),
        codec_config=dict(TINY_CODEC, num_quantizers=c["num_codebooks"]),
        bos_token_id=1, pad_token_id=2, audio_token_id=3, audio_eos_token_id=4,
        codebook_pad_token_id=AUDIO_VOCAB - 1, codebook_eos_token_id=0,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = CsmForConditionalGeneration(config).eval()
    # The default init is tiny (std 0.02): logits would be nearly flat and greedy choices fragile.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("codec_model") and p.dim() > 1:
                p.normal_(0, 0.5 / p.shape[-2] ** 0.5 if p.dim() == 3 else 0.5 / p.shape[-1] ** 0.5)
    return model


def save_transformers_layout(model: CsmForConditionalGeneration, folder: Path) -> Path:
    model.save_pretrained(folder)
    return folder


def halves_to_interleaved(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Inverse of the loader's permutation: back to the reference's adjacent RoPE pairs."""
    rows, cols = weight.shape
    head_dim = rows // num_heads
    return weight.view(num_heads, 2, head_dim // 2, cols).transpose(1, 2).reshape(rows, cols)


def original_state_dict(model: CsmForConditionalGeneration) -> dict[str, torch.Tensor]:
    """The oracle's weights under the reference's (torchtune) names and q/k row order."""
    cfg, dec = model.config, model.config.depth_decoder_config
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out = {
        "text_embeddings.weight": sd["embed_text_tokens.weight"],
        "audio_embeddings.weight": sd["backbone_model.embed_tokens.embed_audio_tokens.weight"],
        "projection.weight": sd["depth_decoder.model.inputs_embeds_projector.weight"],
        "codebook0_head.weight": sd["lm_head.weight"],
        "audio_head": sd["depth_decoder.codebooks_head.weight"],
    }
    for ours, theirs, c in (("backbone", "backbone_model", cfg), ("decoder", "depth_decoder.model", dec)):
        for i in range(c.num_hidden_layers):
            s, d = f"{theirs}.layers.{i}.", f"{ours}.layers.{i}."
            out[d + "attn.q_proj.weight"] = halves_to_interleaved(
                sd[s + "self_attn.q_proj.weight"], c.num_attention_heads
            )
            out[d + "attn.k_proj.weight"] = halves_to_interleaved(
                sd[s + "self_attn.k_proj.weight"], c.num_key_value_heads
            )
            out[d + "attn.v_proj.weight"] = sd[s + "self_attn.v_proj.weight"]
            out[d + "attn.output_proj.weight"] = sd[s + "self_attn.o_proj.weight"]
            out[d + "mlp.w1.weight"] = sd[s + "mlp.gate_proj.weight"]
            out[d + "mlp.w3.weight"] = sd[s + "mlp.up_proj.weight"]
            out[d + "mlp.w2.weight"] = sd[s + "mlp.down_proj.weight"]
            out[d + "sa_norm.scale"] = sd[s + "input_layernorm.weight"]
            out[d + "mlp_norm.scale"] = sd[s + "post_attention_layernorm.weight"]
        out[f"{ours}.norm.scale"] = sd[f"{theirs}.norm.weight"]
    return {k: v.contiguous() for k, v in out.items()}


def original_config(model: CsmForConditionalGeneration) -> dict:
    """The original layout's config, with explicit sizes in place of the flavor names."""
    from csm.checkpoint import args_from_transformers_config

    args = args_from_transformers_config(model.config.to_dict())
    return dict(
        backbone_flavor=dataclasses.asdict(args.backbone),
        decoder_flavor=dataclasses.asdict(args.decoder),
        text_vocab_size=args.text_vocab_size,
        audio_vocab_size=args.audio_vocab_size,
        audio_num_codebooks=args.audio_num_codebooks,
    )


def save_original_layout(model: CsmForConditionalGeneration, folder: Path, as_pickle: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(original_config(model)))
    state = original_state_dict(model)
    if as_pickle:
        torch.save(state, folder / "ckpt.pt")
    else:
        save_file(state, str(folder / "model.safetensors"))
    return folder


# ---------------------------------------------------------------------------------------------
# Prompts: our frames and the oracle's inputs for the same content


def text_frames(text_ids: list[int], num_codebooks: int) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.zeros(len(text_ids), num_codebooks + 1, dtype=torch.long)
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    tokens[:, -1] = torch.tensor(text_ids)
    mask[:, -1] = True
    return tokens, mask


def audio_frames(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """codes [F, N] -> frames with the audio columns present and the text column empty."""
    frames, n = codes.shape
    tokens = torch.zeros(frames, n + 1, dtype=torch.long)
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    tokens[:, :-1] = codes
    mask[:, :-1] = True
    return tokens, mask


def oracle_embeds(oracle: CsmForConditionalGeneration, parts: list[tuple[str, torch.Tensor]]) -> torch.Tensor:
    """The oracle's own embedding of a prompt: ("text", ids [S]) and ("audio", codes [F, N]) parts."""
    embeds = []
    with torch.no_grad():
        for kind, value in parts:
            if kind == "text":
                embeds.append(oracle.embed_text_tokens(value))
            else:
                embeds.append(oracle.backbone_model.embed_tokens(value[None])[0])
    return torch.cat(embeds)[None]


def our_frames(parts: list[tuple[str, torch.Tensor]], num_codebooks: int) -> tuple[torch.Tensor, torch.Tensor]:
    frames = [text_frames(v.tolist(), num_codebooks) if k == "text" else audio_frames(v) for k, v in parts]
    return torch.cat([f[0] for f in frames])[None], torch.cat([f[1] for f in frames])[None]
