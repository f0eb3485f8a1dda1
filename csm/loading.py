"""Checkpoint loading: find the files, read the config, map every tensor name explicitly.

sesame/csm-1b has been published in two layouts:

* original: `config.json` with `backbone_flavor`, `decoder_flavor`, `text_vocab_size`,
  `audio_vocab_size`, `audio_num_codebooks`, and weights named as in the torchtune reference
  (`backbone.layers.N.attn.q_proj.weight`, `...sa_norm.scale`, `...mlp.w1.weight`, `audio_head`),
  as `model.safetensors` or a `.pt` state dict.
* transformers: a `CsmConfig` `config.json` (`model_type: "csm"`) and `model.safetensors`, possibly
  sharded with `model.safetensors.index.json`, which also carries the Mimi codec (`codec_model.*`).

The reference's rotary embedding rotates adjacent channel pairs (0,1), (2,3), ...; transformers'
(and ours) rotates channel i with i + head_dim/2. transformers' conversion therefore permuted the
rows of q_proj and k_proj inside each head; loading the original layout applies that permutation.

Nothing is ever left randomly initialised: a missing, unexpected or mis-shaped tensor raises
CheckpointError naming it. Tensors are read one at a time and moved straight to the target
device and dtype, so no full-precision copy of the model lands on the GPU.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import Tensor

from csm import hub
from csm.hub import CheckpointError, looks_like_path  # CheckpointError stays importable from here
from csm.models import FLAVORS, Model, ModelArgs, RopeScaling, TransformerArgs
from csm.packing import pack_linear_weights


# ---------------------------------------------------------------------------------------------
# Finding files (local folder or Hub repo)

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_FILES = ("ckpt.pt", "model.pt", "pytorch_model.bin")


def hub_file(repo_id: str, filename: str, revision=None, token=None, optional=False) -> Path | None:
    """Download one file of a Hub repo (or take it from the cache); CheckpointError says what to do."""
    try:
        return hub.download(repo_id, filename, revision=revision, token=token)
    except hub.HubFileError as e:
        if optional and e.reason == hub.NO_FILE:
            return None
        raise CheckpointError(e.why + _ADVICE.get(e.reason, ".")) from e


_ADVICE = {
    hub.NO_REPO: "; nor is it a local folder.",
    hub.NOT_CACHED: ". Connect to the internet once, or pass a local folder with the checkpoint.",
}


@dataclass
class Checkpoint:
    """Where a checkpoint's files are and what its config says."""

    source: str
    layout: str  # "original" or "transformers"
    args: ModelArgs
    config: dict
    weight_files: list[Path]
    # Where the repo's other files (tokenizer) come from: a local folder, or a Hub repo + revision.
    local_folder: Path | None = None
    revision: str | None = None
    token: str | None = field(default=None, repr=False)

    def other_file(self, filename: str) -> Path | None:
        """Another file of the same checkpoint (e.g. tokenizer.json), or None if it has none."""
        if self.local_folder is not None:
            path = self.local_folder / filename
            return path if path.is_file() else None
        return hub_file(self.source, filename, self.revision, self.token, optional=True)


def resolve_checkpoint(name_or_path: str | Path, revision=None, token=None) -> Checkpoint:
    """Locate config and weight files of a local folder or Hub repo id, and read the config."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return _resolve(str(name_or_path), lambda f: (path / f) if (path / f).is_file() else None, local_folder=path)
    if path.suffix in (".safetensors", ".pt", ".bin") and path.is_file():
        raise CheckpointError(f"{path} is a weight file: pass the folder that holds it and its config.json.")
    if looks_like_path(str(name_or_path)):
        raise CheckpointError(f"no such folder: {path}")
    return _resolve(
        str(name_or_path),
        lambda f: hub_file(str(name_or_path), f, revision, token, optional=True),
        revision=revision,
        token=token,
    )


def _resolve(source: str, fetch: Callable[[str], Path | None], **where) -> Checkpoint:
    config_path = fetch(CONFIG_FILE)
    config = json.loads(config_path.read_text()) if config_path else {}
    layout = detect_layout(config, source)
    if layout == "transformers":
        index = fetch(SAFETENSORS_INDEX)
        if index is not None:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            files = [_required(fetch, shard, source) for shard in shards]
        else:
            files = [_required(fetch, SAFETENSORS_FILE, source)]
        args = args_from_transformers_config(config)
    else:
        files = None
        for name in (SAFETENSORS_FILE, *PICKLE_FILES):
            found = fetch(name)
            if found is not None:
                files = [found]
                break
        if files is None:
            raise CheckpointError(
                f"{source} has a config for the original layout but no weights: expected one of "
                f"{[SAFETENSORS_FILE, *PICKLE_FILES]}."
            )
        args = args_from_original_config(config, source)
    return Checkpoint(source=source, layout=layout, args=args, config=config, weight_files=files, **where)


def _required(fetch, filename: str, source: str) -> Path:
    found = fetch(filename)
    if found is None:
        raise CheckpointError(f"{source} is missing {filename}.")
    return found


# ---------------------------------------------------------------------------------------------
# Configs -> ModelArgs

ORIGINAL_CONFIG_KEYS = ("backbone_flavor", "decoder_flavor", "audio_num_codebooks", "audio_vocab_size", "text_vocab_size")


def detect_layout(config: dict, source: str) -> str:
    if config.get("model_type") == "csm":
        return "transformers"
    if "backbone_flavor" in config:
        return "original"
    if not config:
        raise CheckpointError(
            f"{source} has no config.json. A CSM checkpoint needs one: either the transformers CsmConfig "
            "(model_type 'csm') or the original one (backbone_flavor, decoder_flavor, ...)."
        )
    raise CheckpointError(
        f"{source}: unknown checkpoint layout (config.json has model_type={config.get('model_type')!r} and no "
        "'backbone_flavor'). Expected sesame/csm-1b in the original layout or the transformers CsmConfig layout."
    )


def args_from_original_config(config: dict, source: str) -> ModelArgs:
    missing = [k for k in ORIGINAL_CONFIG_KEYS if k not in config]
    if missing:
        raise CheckpointError(f"{source}: config.json of the original layout lacks {missing}.")
    values = {k: config[k] for k in ORIGINAL_CONFIG_KEYS}
    for key in ("backbone_flavor", "decoder_flavor"):
        flavor = values[key]
        if isinstance(flavor, dict):  # our extension: explicit sizes instead of a flavor name
            values[key] = transformer_args_from_dict(flavor, f"{source}: {key}")
        elif flavor not in FLAVORS:
            raise CheckpointError(f"{source}: unknown {key} {flavor!r}; known flavors: {sorted(FLAVORS)}.")
    return ModelArgs(**values)


def transformer_args_from_dict(values: dict, where: str) -> TransformerArgs:
    values = dict(values)
    scaling = values.pop("rope_scaling", None)
    try:
        return TransformerArgs(**values, rope_scaling=RopeScaling(**scaling) if scaling else None)
    except TypeError as e:
        raise CheckpointError(f"{where}: {e}") from e


def _rope_from_config(config: dict) -> tuple[float, RopeScaling | None]:
    # transformers 5 writes `rope_parameters`; older configs have rope_theta + rope_scaling.
    params = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    theta = params.get("rope_theta", config.get("rope_theta", 500_000.0))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type == "default":
        return float(theta), None
    if rope_type != "llama3":
        raise CheckpointError(f"unsupported rope type {rope_type!r}: only 'default' and 'llama3' are implemented.")
    return float(theta), RopeScaling(
        factor=float(params["factor"]),
        low_freq_factor=float(params["low_freq_factor"]),
        high_freq_factor=float(params["high_freq_factor"]),
        original_max_position_embeddings=int(params["original_max_position_embeddings"]),
    )


def _transformer_args(config: dict) -> TransformerArgs:
    if config.get("hidden_act", "silu") != "silu" or config.get("attention_bias") or config.get("mlp_bias"):
        raise CheckpointError("only silu MLPs without biases are supported (as in CSM-1B)")
    theta, scaling = _rope_from_config(config)
    return TransformerArgs(
        num_layers=config["num_hidden_layers"],
        num_heads=config["num_attention_heads"],
        num_kv_heads=config.get("num_key_value_heads") or config["num_attention_heads"],
        embed_dim=config["hidden_size"],
        intermediate_dim=config["intermediate_size"],
        max_seq_len=config["max_position_embeddings"],
        norm_eps=config.get("rms_norm_eps", 1e-5),
        rope_base=theta,
        rope_scaling=scaling,
        head_dim=config.get("head_dim"),
    )


def args_from_transformers_config(config: dict) -> ModelArgs:
    decoder = dict(config["depth_decoder_config"])
    if decoder.get("num_codebooks", config["num_codebooks"]) != config["num_codebooks"]:
        raise CheckpointError("config.json: depth_decoder_config.num_codebooks differs from num_codebooks")
    if config.get("tie_codebooks_embeddings") is False:
        raise CheckpointError("untied codebook embeddings are not supported (CSM shares them)")
    return ModelArgs(
        backbone_flavor=_transformer_args(config),
        # The decoder only ever sees one frame's codebooks; its cache holds that many positions.
        decoder_flavor=_transformer_args(decoder),
        text_vocab_size=config["text_vocab_size"],
        audio_vocab_size=config["vocab_size"],
        audio_num_codebooks=config["num_codebooks"],
    )


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
    # bf16 where the hardware is built for it; fp32 on CPU/MPS, where bf16 matmuls are slow or patchy.
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_model(checkpoint: Checkpoint, device=None, dtype=None, pack_weights: bool = True) -> Model:
    """The model on `device` in `dtype`. On the CPU, `pack_weights` pre-packs the Linears for oneDNN
    (csm.packing.pack_linear_weights: ~1.5x faster decode); pass False for the plain layout."""
    device = resolve_device(device)
    dtype = dtype or default_dtype(device)
    with torch.device("meta"):
        model = Model(checkpoint.args)  # no memory: every parameter is assigned from the checkpoint
    source = TensorSource(checkpoint.weight_files)
    # copy=True: a CPU tensor would otherwise stay a view of the memory-mapped file, which keeps
    # the whole file mapped (and counted in RSS) for as long as the model lives.
    state = {
        name: t.to(device=device, dtype=dtype, copy=True) for name, t in mapped_tensors(checkpoint, model, source)
    }
    del source  # unmaps the files
    model.load_state_dict(state, strict=True, assign=True)
    del state  # the modules own the tensors now, so packing frees each original as it goes
    model.eval().requires_grad_(False)
    if pack_weights:
        pack_linear_weights(model)
    return model


def codec_weights(checkpoint: Checkpoint) -> tuple[dict, dict[str, Tensor]] | None:
    """The Mimi codec carried by a transformers-layout checkpoint: (config, state dict), or None."""
    if checkpoint.layout != "transformers" or "codec_config" not in checkpoint.config:
        return None
    source = TensorSource(checkpoint.weight_files)
    prefix = "codec_model."
    state = {k[len(prefix):]: source.get(k) for k in source.keys() if k.startswith(prefix)}
    return (checkpoint.config["codec_config"], state) if state else None
