"""Finding a CSM checkpoint's files (a local folder or a Hub repo) and reading its config into ModelArgs.

sesame/csm-1b has been published in two layouts:

* original: `config.json` with `backbone_flavor`, `decoder_flavor`, `text_vocab_size`,
  `audio_vocab_size`, `audio_num_codebooks`, and weights named as in the torchtune reference
  (`backbone.layers.N.attn.q_proj.weight`, `...sa_norm.scale`, `...mlp.w1.weight`, `audio_head`),
  as `model.safetensors` or a `.pt` state dict.
* transformers: a `CsmConfig` `config.json` (`model_type: "csm"`) and `model.safetensors`, possibly
  sharded with `model.safetensors.index.json`, which also carries the Mimi codec (`codec_model.*`).

A checkpoint folder is untrusted input (the app loads whatever `--model` names), so:

* every file read is confined to the folder (or Hub repo): names, ours or those in the shard
  index, must be plain relative paths, and links may not lead out (see `local_file`);
* every config value that sizes the model or its codec is checked against `csm.limits` as the
  config is read, before anything is built; JSON files are read with a size cap.

Reading the tensors and building the model is `csm.loading`'s part.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path, PureWindowsPath
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
MAX_JSON_BYTES = 16 * 2**20  # sesame/csm-1b's largest JSON we read (the shard index) is well under 1 MiB
MAX_SHARDS = 1_000


def checked_name(name, source: str, what: str = "the file") -> str:
    """`name` if it is a plain relative path ("model-00001-of-00002.safetensors", "sub/x.json"), which cannot
    leave the folder; CheckpointError otherwise. Names come from us and from the checkpoint's own index."""
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"{source}: {what} must be named by a non-empty string, got {shown_value(name)}.")
    parts = name.replace("\\", "/").split("/")
    if name.startswith("/") or PureWindowsPath(name).anchor or ".." in parts:
        raise CheckpointError(
            f"{source}: {what} {shown_value(name)} lies outside the checkpoint folder; only files inside it are read."
        )
    if "\\" in name or "\0" in name or any(part in ("", ".") for part in parts):
        raise CheckpointError(f"{source}: {what} {shown_value(name)} is not a plain relative file name.")
    return name


def local_file(folder: Path, name: str, source: str, what: str = "the file") -> Path | None:
    """`folder / name` if it is a file inside `folder`, else None; CheckpointError if it would lead outside.

    Symbolic links are followed only to files inside the folder, and, for a Hugging Face cache
    snapshot (`models--owner--name/snapshots/REV/`), into that repo's own `blobs/`, where all its
    files live. So a link planted in a checkpoint cannot make the loader read, say, /etc/passwd.
    """
    path = folder / checked_name(name, source, what)
    if not path.is_file():  # also false for a FIFO or a device, which would never finish reading
        return None
    try:
        real, root = path.resolve(strict=True), folder.resolve(strict=True)
    except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop, before Python 3.13
        raise CheckpointError(f"{source}: cannot resolve {what} {name!r}: {e}") from e
    snapshot_blobs = root.parent.parent / "blobs" if root.parent.name == "snapshots" else None
    if not real.is_relative_to(root) and real.parent != snapshot_blobs:
        raise CheckpointError(
            f"{source}: {what} {name!r} is a link to {real.name!r}, which lies outside the checkpoint folder; "
            "only files inside it are read."
        )
    return path


def hub_file(repo_id: str, filename: str, revision=None, token=None, optional=False, what="the file") -> Path | None:
    """Download one file of a Hub repo (or take it from the cache); CheckpointError says what to do."""
    checked_name(filename, repo_id, what)  # hf_hub_download would join it onto a cache path
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


def read_json(path: Path, source: str) -> dict:
    """A JSON object from a checkpoint file, read with a size cap; CheckpointError if it is anything else."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_JSON_BYTES + 1)
        if len(data) > MAX_JSON_BYTES:
            raise CheckpointError(f"{source}: {path.name} is over {MAX_JSON_BYTES // 2**20} MiB, too large to be read.")
        value = json.loads(data)
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON or bad UTF-8
        raise CheckpointError(f"{source}: cannot read {path.name} as JSON: {e}") from e
    if not isinstance(value, dict):
        raise CheckpointError(f"{source}: {path.name} must hold a JSON object, got {type(value).__name__}.")
    return value


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
            return local_file(self.local_folder, filename, self.source)
        return hub_file(self.source, filename, self.revision, self.token, optional=True)


def resolve_checkpoint(name_or_path: str | Path, revision=None, token=None) -> Checkpoint:
    """Locate config and weight files of a local folder or Hub repo id, and read the config.

    Every file read is confined to the folder or repo: see `checked_name` and `local_file`.
    """
    source, path = str(name_or_path), Path(name_or_path).expanduser()
    if path.is_dir():
        return _resolve(source, lambda name, what="the file": local_file(path, name, source, what), local_folder=path)
    if path.suffix in (".safetensors", ".pt", ".bin") and path.is_file():
        raise CheckpointError(f"{path} is a weight file: pass the folder that holds it and its config.json.")
    if looks_like_path(source):
        raise CheckpointError(f"no such folder: {path}")

    def from_hub(name: str, what: str = "the file") -> Path | None:
        return hub_file(source, name, revision, token, optional=True, what=what)

    return _resolve(source, from_hub, revision=revision, token=token)


def _resolve(source: str, fetch: Callable[..., Path | None], **where) -> Checkpoint:
    config_path = fetch(CONFIG_FILE)
    config = read_json(config_path, source) if config_path else {}
    layout = detect_layout(config, source)
    config_name = f"{CONFIG_FILE} of {source}"
    if layout == "transformers":
        args = args_from_transformers_config(config, config_name)  # sizes checked before anything is built
        if "codec_config" in config:
            check_codec_config(config["codec_config"], config_name)
        files = _transformers_weight_files(fetch, source)
    else:
        args = args_from_original_config(config, source)
        files = _original_weight_files(fetch, source)
    return Checkpoint(source=source, layout=layout, args=args, config=config, weight_files=files, **where)


def _transformers_weight_files(fetch, source: str) -> list[Path]:
    index = fetch(SAFETENSORS_INDEX)
    if index is None:
        return [_required(fetch, SAFETENSORS_FILE, source)]
    weight_map = read_json(index, source).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{source}: {SAFETENSORS_INDEX} has no weight_map of tensor names to shard files.")
    what, shards = f"the shard named in {SAFETENSORS_INDEX}", set()
    for shard in weight_map.values():  # every name first: a bad one is refused before any file is looked for
        if not checked_name(shard, source, what).endswith(".safetensors"):
            raise CheckpointError(f"{source}: {what} {shown_value(shard)} is not a .safetensors file.")
        shards.add(shard)
        if len(shards) > MAX_SHARDS:
            raise CheckpointError(f"{source}: {SAFETENSORS_INDEX} names over {MAX_SHARDS:,} shard files.")
    return [_required(fetch, shard, source, what) for shard in sorted(shards)]


def _original_weight_files(fetch, source: str) -> list[Path]:
    for name in (SAFETENSORS_FILE, *PICKLE_FILES):
        found = fetch(name)
        if found is not None:
            return [found]
    raise CheckpointError(
        f"{source} has a config for the original layout but no weights: expected one of "
        f"{[SAFETENSORS_FILE, *PICKLE_FILES]}."
    )


def _required(fetch, filename: str, source: str, what: str = "the file") -> Path:
    found = fetch(filename, what)
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
