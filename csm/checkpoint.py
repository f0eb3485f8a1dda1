"""Finding a CSM checkpoint's files (a local folder or a Hub repo) and reading its config into ModelArgs.

sesame/csm-1b has been published in two layouts:

* original: `config.json` with `backbone_flavor`, `decoder_flavor`, `text_vocab_size`,
  `audio_vocab_size`, `audio_num_codebooks`, and weights named as in the torchtune reference
  (`backbone.layers.N.attn.q_proj.weight`, `...sa_norm.scale`, `...mlp.w1.weight`, `audio_head`),
  as `model.safetensors` or a `.pt` state dict.
* transformers: a `CsmConfig` `config.json` (`model_type: "csm"`) and `model.safetensors`, possibly
  sharded with `model.safetensors.index.json`, which also carries the Mimi codec (`codec_model.*`).

Every config value that sizes the model or its codec is checked against `csm.limits` as the config is read,
before anything is built: a checkpoint folder is untrusted input (the app loads whatever
`--model` names).

Reading the tensors and building the model is `csm.loading`'s part.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

from csm import hub, limits
from csm.hub import CheckpointError, looks_like_path
from csm.limits import ConfigReader, check_codec_config, shown_value
from csm.models import FLAVORS, ModelArgs, RopeScaling, TransformerArgs


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
        args = args_from_transformers_config(config, f"{CONFIG_FILE} of {source}")  # sizes checked first
        if "codec_config" in config:
            check_codec_config(config["codec_config"], f"{CONFIG_FILE} of {source}")
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

ORIGINAL_CONFIG_KEYS = (
    "backbone_flavor", "decoder_flavor", "audio_num_codebooks", "audio_vocab_size", "text_vocab_size"
)  # fmt: skip


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
    read = ConfigReader(config, f"{CONFIG_FILE} of {source}")
    flavors = {key: _original_flavor(read, key) for key in ("backbone_flavor", "decoder_flavor")}
    return ModelArgs(
        **flavors,
        text_vocab_size=read.count("text_vocab_size", limits.TEXT_VOCAB),
        audio_vocab_size=read.count("audio_vocab_size", limits.AUDIO_VOCAB),
        audio_num_codebooks=read.count("audio_num_codebooks", limits.CODEBOOKS),
    )


def _original_flavor(read: ConfigReader, key: str) -> str | TransformerArgs:
    flavor = read.values[key]
    if isinstance(flavor, dict):  # our extension: explicit sizes instead of a flavor name
        return transformer_args_from_dict(flavor, read.where, prefix=f"{key}.")
    if not isinstance(flavor, str) or flavor not in FLAVORS:
        read.fail(key, flavor, f"one of {sorted(FLAVORS)} or an object of explicit sizes")
    return flavor


def transformer_args_from_dict(values: dict, where: str, prefix: str = "") -> TransformerArgs:
    """TransformerArgs from a dict of its own field names, every size checked (see csm.limits)."""
    read = ConfigReader(values, where, prefix)
    unknown = sorted(set(values) - {f.name for f in fields(TransformerArgs)})
    if unknown:
        raise CheckpointError(f"{where}: unknown keys in {prefix.rstrip('.') or 'the flavor'}: {unknown}.")
    scaling = values.get("rope_scaling")
    if scaling:
        scaling_keys = {f.name for f in fields(RopeScaling)}
        if not isinstance(scaling, dict) or not set(scaling) <= scaling_keys:
            read.fail("rope_scaling", scaling, f"an object with keys among {sorted(scaling_keys)}")
        scaling = RopeScaling(**limits.read_llama3_scaling(read.sub("rope_scaling"), asdict(RopeScaling())))
    return TransformerArgs(
        **limits.read_stack(read, limits.ORIGINAL_KEYS, default_positions=2048),
        rope_base=read.number("rope_base", limits.ROPE_THETA, 500_000.0),
        rope_scaling=scaling or None,
    )


def _rope_from_config(read: ConfigReader) -> tuple[float, RopeScaling | None]:
    # transformers 5 writes `rope_parameters`; older configs have rope_theta + rope_scaling.
    section = next((key for key in ("rope_parameters", "rope_scaling") if read.values.get(key)), None)
    params = read.sub(section) if section else ConfigReader({}, read.where, read.prefix)
    theta = params.number("rope_theta", limits.ROPE_THETA, None)
    if theta is None:
        theta = read.number("rope_theta", limits.ROPE_THETA, 500_000.0)
    rope_type = params.values.get("rope_type", params.values.get("type", "default"))
    if rope_type == "default":
        return theta, None
    if rope_type != "llama3":
        raise CheckpointError(
            f"{read.where}: unsupported rope type {shown_value(rope_type)}: only 'default' and 'llama3' are supported."
        )
    return theta, RopeScaling(**limits.read_llama3_scaling(params))


def _transformer_args(read: ConfigReader) -> TransformerArgs:
    config = read.values
    if config.get("hidden_act", "silu") != "silu" or config.get("attention_bias") or config.get("mlp_bias"):
        raise CheckpointError(f"{read.where}: only silu MLPs without biases are supported (as in CSM-1B)")
    theta, scaling = _rope_from_config(read)
    return TransformerArgs(**limits.read_stack(read, limits.TRANSFORMERS_KEYS), rope_base=theta, rope_scaling=scaling)


def args_from_transformers_config(config: dict, where: str = CONFIG_FILE) -> ModelArgs:
    """ModelArgs from a transformers CsmConfig dict; every size is checked first (see csm.limits)."""
    read = ConfigReader(config, where)
    num_codebooks = read.count("num_codebooks", limits.CODEBOOKS)
    decoder = read.sub("depth_decoder_config")
    if decoder.values.get("num_codebooks", num_codebooks) != num_codebooks:
        raise CheckpointError(f"{where}: depth_decoder_config.num_codebooks differs from num_codebooks")
    if config.get("tie_codebooks_embeddings") is False:
        raise CheckpointError("untied codebook embeddings are not supported (CSM shares them)")
    return ModelArgs(
        backbone_flavor=_transformer_args(read),
        # The decoder only ever sees one frame's codebooks; its cache holds that many positions.
        decoder_flavor=_transformer_args(decoder),
        text_vocab_size=read.count("text_vocab_size", limits.TEXT_VOCAB),
        audio_vocab_size=read.count("vocab_size", limits.AUDIO_VOCAB),
        audio_num_codebooks=num_codebooks,
    )
