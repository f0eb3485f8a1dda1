"""Loading a checkpoint's weights into the model: every tensor name mapped explicitly, nothing left random.

`csm.checkpoint` finds the files and reads the config; `resolve_checkpoint` and `CheckpointError`
are importable from here too, so that `resolve_checkpoint` then `load_model` is all a caller needs.

The reference's rotary embedding rotates adjacent channel pairs (0,1), (2,3), ...; transformers'
(and ours) rotates channel i with i + head_dim/2. transformers' conversion therefore permuted the
rows of q_proj and k_proj inside each head; loading the original layout applies that permutation.

Nothing is ever left randomly initialised: a missing, unexpected or mis-shaped tensor raises
CheckpointError naming it. Tensors are read one at a time and moved straight to the target
device and dtype, so no full-precision copy of the model lands on the GPU.
"""

from __future__ import annotations

import ctypes
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import Tensor

from csm import compiling

# Checkpoint, CheckpointError and resolve_checkpoint are re-exported: callers load through this module.
from csm.checkpoint import Checkpoint, CheckpointError, resolve_checkpoint  # noqa: F401
from csm.models import Model, ModelArgs, TransformerArgs
from csm.packing import cpu_computes_bf16, pack_linear_weights
from csm.quantize import check_quantize, quantize_int8

# ---------------------------------------------------------------------------------------------
# Reading tensors


class TensorSource:
    """Lazily reads named tensors from safetensors shards or a .pt state dict."""

    def __init__(self, files: list[Path]):
        self.where: dict[str, Path] = {}
        self.pickled: dict[str, Tensor] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self._open: dict[Path, object] = {}
        for path in files:
            if path.suffix == ".safetensors":
                self._index_safetensors(path)
            else:
                self._load_pickle(path)

    def _index_safetensors(self, path: Path) -> None:
        from safetensors import safe_open

        try:
            handle = safe_open(str(path), framework="pt", device="cpu")
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise CheckpointError(f"cannot read {path}: {e}. The file may be truncated; download it again.") from e
        self._open[path] = handle
        for name in handle.keys():
            self.where[name] = path
            self.shapes[name] = tuple(handle.get_slice(name).get_shape())

    def _load_pickle(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:
            raise CheckpointError(f"cannot read {path} as a weights-only state dict: {e}") from e
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]  # training checkpoints wrap the weights
        if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
            raise CheckpointError(f"{path} does not hold a state dict of tensors.")
        self.pickled.update(state)
        self.shapes.update({k: tuple(v.shape) for k, v in state.items()})

    def keys(self) -> list[str]:
        return list(self.shapes)

    def get(self, name: str) -> Tensor:
        if name in self.pickled:
            return self.pickled[name]
        return self._open[self.where[name]].get_tensor(name)


# ---------------------------------------------------------------------------------------------
# Name mapping: every target parameter is built from named source tensors.


@dataclass
class Rule:
    target: str
    sources: list[str | tuple[str, ...]]  # a tuple lists alternative names of one tensor, first found wins
    build: Callable[..., Tensor] = lambda t: t

    def resolve(self, available) -> None:
        """Pick, for each alternative, the name this checkpoint has (or the first, to report it missing)."""
        self.sources = [
            next((n for n in s if n in available), s[0]) if isinstance(s, tuple) else s for s in self.sources
        ]


def interleaved_to_halves(weight: Tensor, num_heads: int) -> Tensor:
    """Reorder each head's output rows from adjacent RoPE pairs to the two-halves layout."""
    rows, cols = weight.shape
    head_dim = rows // num_heads
    return weight.view(num_heads, head_dim // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def _concat(*tensors: Tensor) -> Tensor:
    return torch.cat(tensors, dim=0)


def _stack_rules(prefix_out: str, args: TransformerArgs, names: dict[str, str], prefix_in: str, original: bool):
    """Rules for one transformer stack. `names` maps our roles to the source's sub-names."""
    rules = []
    for i in range(args.num_layers):
        src, dst = f"{prefix_in}.layers.{i}.", f"{prefix_out}.layers.{i}."
        if original:
            heads, kv_heads = args.num_heads, args.num_kv_heads

            def qkv(q, k, v, heads=heads, kv_heads=kv_heads):
                return _concat(interleaved_to_halves(q, heads), interleaved_to_halves(k, kv_heads), v)
        else:
            qkv = _concat
        rules += [
            Rule(dst + "attn.qkv_proj.weight", [src + names[p] for p in ("q", "k", "v")], qkv),
            Rule(dst + "attn.o_proj.weight", [src + names["o"]]),
            Rule(dst + "mlp.gate_up_proj.weight", [src + names["gate"], src + names["up"]], _concat),
            Rule(dst + "mlp.down_proj.weight", [src + names["down"]]),
            Rule(dst + "attn_norm.weight", [src + names["attn_norm"]]),
            Rule(dst + "mlp_norm.weight", [src + names["mlp_norm"]]),
        ]
    rules.append(Rule(f"{prefix_out}.norm.weight", [f"{prefix_in}.{names['norm']}"]))
    return rules


ORIGINAL_NAMES = dict(
    q="attn.q_proj.weight", k="attn.k_proj.weight", v="attn.v_proj.weight", o="attn.output_proj.weight",
    gate="mlp.w1.weight", up="mlp.w3.weight", down="mlp.w2.weight",
    attn_norm="sa_norm.scale", mlp_norm="mlp_norm.scale", norm="norm.scale",
)  # fmt: skip
TRANSFORMERS_NAMES = dict(
    q="self_attn.q_proj.weight", k="self_attn.k_proj.weight", v="self_attn.v_proj.weight", o="self_attn.o_proj.weight",
    gate="mlp.gate_proj.weight", up="mlp.up_proj.weight", down="mlp.down_proj.weight",
    attn_norm="input_layernorm.weight", mlp_norm="post_attention_layernorm.weight", norm="norm.weight",
)  # fmt: skip

# Present in some checkpoints, not weights: caches, masks and RoPE tables that we recompute.
IGNORED_ORIGINAL = re.compile(r"(.*causal_mask$|.*\.kv_cache\..*|.*pos_embeddings\..*)")
IGNORED_TRANSFORMERS = re.compile(
    r"(.*rotary_emb\.(inv_freq|original_inv_freq)$|.*audio_tokens_offsets$|codec_model\..*"
    r"|depth_decoder\.model\.embed_tokens\.weight|backbone_model\.embed_tokens\.embed_audio_tokens\.weight)"
)  # the last two: the tied audio table under its other name


def mapping_rules(layout: str, args: ModelArgs) -> tuple[list[Rule], re.Pattern]:
    if layout == "original":
        rules = [
            Rule("text_embeddings.weight", ["text_embeddings.weight"]),
            Rule("audio_embeddings.weight", ["audio_embeddings.weight"]),
            Rule("projection.weight", ["projection.weight"]),
            Rule("codebook0_head.weight", ["codebook0_head.weight"]),
            Rule("audio_head", ["audio_head"]),
        ]
        rules += _stack_rules("backbone", args.backbone, ORIGINAL_NAMES, "backbone", original=True)
        rules += _stack_rules("decoder", args.decoder, ORIGINAL_NAMES, "decoder", original=True)
        return rules, IGNORED_ORIGINAL
    rules = [
        Rule("text_embeddings.weight", ["embed_text_tokens.weight"]),
        # Tied with the depth decoder's input table; save_pretrained keeps only one of the two names.
        Rule(
            "audio_embeddings.weight",
            [("backbone_model.embed_tokens.embed_audio_tokens.weight", "depth_decoder.model.embed_tokens.weight")],
        ),
        Rule("projection.weight", ["depth_decoder.model.inputs_embeds_projector.weight"]),
        Rule("codebook0_head.weight", ["lm_head.weight"]),
        Rule("audio_head", ["depth_decoder.codebooks_head.weight"]),
    ]
    rules += _stack_rules("backbone", args.backbone, TRANSFORMERS_NAMES, "backbone_model", original=False)
    rules += _stack_rules("decoder", args.decoder, TRANSFORMERS_NAMES, "depth_decoder.model", original=False)
    return rules, IGNORED_TRANSFORMERS


def _shape_after(shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    # Every rule with several sources concatenates them along the rows.
    return (sum(s[0] for s in shapes), *shapes[0][1:]) if len(shapes) > 1 else shapes[0]


def mapped_tensors(checkpoint: Checkpoint, model: Model, source: TensorSource) -> Iterator[tuple[str, Tensor]]:
    """Check the whole mapping before reading any data, then yield (our name, tensor) pairs."""
    rules, ignored = mapping_rules(checkpoint.layout, checkpoint.args)
    for rule in rules:
        rule.resolve(source.shapes)
    expected = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert {r.target for r in rules} == set(expected), "mapping table out of sync with the model"
    used = {s for r in rules for s in r.sources}
    missing = [s for s in sorted(used) if s not in source.shapes]
    unexpected = [k for k in source.keys() if k not in used and not ignored.fullmatch(k)]
    problems = []
    if missing:
        problems.append(f"missing tensors: {_short_list(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {_short_list(unexpected)}")
    if not missing:
        for rule in rules:
            got = _shape_after([source.shapes[s] for s in rule.sources])
            if got != expected[rule.target]:
                detail = ", ".join(f"{s} {list(source.shapes[s])}" for s in rule.sources)
                problems.append(
                    f"shape mismatch for {rule.target}: the config implies {list(expected[rule.target])}, "
                    f"the checkpoint has {detail}"
                )
    if problems:
        raise CheckpointError(
            f"{checkpoint.source} ({checkpoint.layout} layout) does not match its config: "
            + "; ".join(problems)
            + ". The files may be from a different model or incomplete: download them again, or fix config.json."
        )
    for rule in rules:
        yield rule.target, rule.build(*(source.get(s) for s in rule.sources))


def _short_list(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# ---------------------------------------------------------------------------------------------
# Building the model


class DeviceError(ValueError):
    """A device that is unknown or not available here. The message lists the ones that are."""


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def available_devices() -> list[str]:
    """The device names this machine can run the model on, best first."""
    cuda = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return [*(["cuda"] if len(cuda) == 1 else cuda), *(["mps"] if torch.backends.mps.is_available() else []), "cpu"]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """None: the best device here. A name or torch.device: checked, so a bad one is a DeviceError, not torch's."""
    if device is None:
        return default_device()
    available = ", ".join(available_devices())
    if not isinstance(device, (str, torch.device)):
        raise DeviceError(f"device must be a name such as 'cuda' or 'cpu', got {device!r}; available: {available}")
    try:
        resolved = torch.device(device.strip().lower() if isinstance(device, str) else device)
    except RuntimeError:  # torch lists every device type it knows, most of which csm cannot use
        resolved = None
    if resolved is None or resolved.type not in ("cuda", "mps", "cpu"):
        hint = " ('cuda' is the name for an NVIDIA GPU)" if str(device).strip().lower() == "gpu" else ""
        raise DeviceError(f"unknown device {str(device)!r}{hint}; available here: {available}")
    if resolved.type == "cuda":
        _check_cuda(resolved, available)
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        why = "this machine has no Apple GPU" if torch.backends.mps.is_built() else "this torch build has no MPS"
        raise DeviceError(f"MPS is not available here ({why}); available: {available}")
    return resolved


def _check_cuda(device: torch.device, available: str) -> None:
    if not torch.cuda.is_available():
        built = torch.version.cuda is not None or torch.version.hip is not None
        why = "no GPU found" if built else "this torch build has no CUDA"
        raise DeviceError(f"CUDA is not available here ({why}); available: {available}")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise DeviceError(f"there is no {device}: this machine has {count} CUDA device(s); available: {available}")


def default_dtype(device: torch.device) -> torch.dtype:
    """The dtype a model loads in when none is asked for: bf16 where the hardware computes it, else fp32.

    - CUDA: bf16.
    - CPU: bf16 if it has bf16 arithmetic in hardware (AVX-512 BF16 or AMX, `cpu_computes_bf16`),
      1.5 to 2x faster than fp32 there (bench/RESULTS.md); fp32 elsewhere, where bf16 is emulated.
    - MPS (and anything else): fp32, as bf16 support there is patchy.
    """
    if device.type == "cuda":
        return torch.bfloat16
    if device.type == "cpu" and cpu_computes_bf16():
        return torch.bfloat16
    return torch.float32


def load_model(checkpoint: Checkpoint, device=None, dtype=None, pack_weights: bool = True,
               quantize: str | None = None, compile_decoder: bool = False) -> Model:  # fmt: skip
    """The model on `device` in `dtype` (default: `default_dtype(device)`).

    `quantize="int8"`: int8 weights with one scale per output channel for the transformer Linears, the
    projection and the audio heads (csm.quantize), made here from the float checkpoint; activations stay
    in `dtype`. `quantize="int8-dynamic"` (CPU with VNNI only): the same int8 weights, and the activations
    of those products quantized to 8 bits per row at run time (faster, one more rounding). Otherwise, on
    the CPU, `pack_weights` pre-packs the Linears for oneDNN (csm.packing.pack_linear_weights: ~1.5x faster
    decode); pass False for the plain layout. Both are made tensor by tensor as the checkpoint is read, so
    the plain model is never whole in memory beside them. `compile_decoder=True` (CPU, float weights): one
    take's depth-decoder steps then run compiled by inductor (csm.compiling: faster frames, other last bits
    than eager's, a C++ compiler needed, more memory; eager as usual if compiling fails).
    """
    quantize = check_quantize(quantize)  # before any weight is read
    device = resolve_device(device)
    check_quantize(quantize, device)
    dtype = dtype or default_dtype(device)
    if compile_decoder:
        compiling.check_compile_decoder(device, dtype, quantize)
    with torch.device("meta"):
        model = Model(checkpoint.args)  # no memory: every parameter is assigned from the checkpoint
    source = TensorSource(checkpoint.weight_files)
    # copy=True: a CPU tensor would otherwise stay a view of the memory-mapped file, which keeps
    # the whole file mapped (and counted in RSS) for as long as the model lives.
    tensors = (
        (name, t.to(device=device, dtype=dtype, copy=True)) for name, t in mapped_tensors(checkpoint, model, source)
    )
    if quantize:
        _assign_converting(model, tensors, lambda: quantize_int8(model, dynamic=quantize == "int8-dynamic"))
    elif pack_weights and device.type == "cpu":  # a decoder to compile is packed once csm.compiling has copied it
        _assign_converting(model, tensors, lambda: pack_linear_weights(model, decoder=not compile_decoder))
    else:
        model.load_state_dict(dict(tensors), strict=True, assign=True)
    del source, tensors  # unmaps the files
    model.eval().requires_grad_(False)
    if compile_decoder:
        compiling.compile_decoder(model, pack=pack_weights)
    release_freed_memory()
    return model


def _assign_converting(model: Model, tensors: Iterator[tuple[str, Tensor]], convert: Callable[[], int]) -> None:
    """Assign each tensor and convert its module at once (int8, or oneDNN's packed layout), so that the plain
    model is never whole in memory beside the converted one: a CSM-1B load peaks near the converted model plus
    its largest tensor. The same weights as converting after a whole load: each module is converted alone.
    `convert` leaves alone the modules whose weights are still on the meta device."""
    for name, tensor in tensors:
        model.load_state_dict({name: tensor}, strict=False, assign=True)
        del tensor
        convert()
    left = [name for name, p in model.named_parameters() if p.is_meta]
    assert not left, f"not loaded: {left}"  # mapped_tensors covers every parameter


def release_freed_memory() -> bool:
    """Hand the heap's free pages back to the system (glibc's malloc_trim); True if it could.

    Loading frees gigabytes of temporaries (converted, packed or quantized weights) that glibc keeps
    for reuse, and they would count in the process's memory for as long as it lives: 0.44 GB after
    an int8 load of CSM-1B (bench/RESULTS.md).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # another C library (musl): nothing to trim this way
        return False
    return True


def codec_weights(checkpoint: Checkpoint) -> tuple[dict, dict[str, Tensor]] | None:
    """The Mimi codec carried by a transformers-layout checkpoint: (config, state dict), or None."""
    if checkpoint.layout != "transformers" or "codec_config" not in checkpoint.config:
        return None
    source = TensorSource(checkpoint.weight_files)
    prefix = "codec_model."
    state = {k[len(prefix) :]: source.get(k) for k in source.keys() if k.startswith(prefix)}
    return (checkpoint.config["codec_config"], state) if state else None
