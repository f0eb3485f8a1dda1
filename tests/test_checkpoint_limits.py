"""A hostile or broken checkpoint folder: absurd sizes are refused at once, files outside the folder are never read."""

import json
import os
import shutil
import time

import pytest
import torch

from csm import hub
from csm.checkpoint import Checkpoint
from csm.codec import load_codec
from csm.generator import _describe
from csm.loading import CheckpointError, codec_weights, load_model, resolve_checkpoint
from csm.models import Model
from tests.oracle import save_original_layout, save_transformers_layout


def edit_config(folder, edit):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


def set_key(config: dict, dotted: str, value) -> None:
    *parents, key = dotted.split(".")
    for parent in parents:
        config = config[parent]
    config[key] = value


# ---------------------------------------------------------------------------------------------
# Sizes


@pytest.mark.parametrize("layers", [1e9, 10**9])
def test_a_billion_layers_is_refused_at_once_naming_the_key(hf_folder, layers):
    edit_config(hf_folder, lambda c: c.update(num_hidden_layers=layers))
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"num_hidden_layers must be a whole number in \[1, 64\], got 1000000000"):
        Model.from_pretrained(str(hf_folder), device="cpu")
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        ("num_hidden_layers", 2.5, r"a whole number in \[1, 64\]"),
        ("num_hidden_layers", -2, r"a whole number in \[1, 64\]"),
        ("num_hidden_layers", True, r"a whole number in \[1, 64\]"),
        ("num_hidden_layers", "2", r"a whole number in \[1, 64\]"),
        ("hidden_size", 10**30, r"a whole number in \[1, 16,384\]"),
        ("num_attention_heads", 0, r"a whole number in \[1, 256\]"),
        ("intermediate_size", 1e12, r"a whole number in \[1, 65,536\]"),
        ("max_position_embeddings", float("inf"), r"a whole number in \[1, 16,384\]"),
        ("text_vocab_size", 2**21, r"a whole number in \[1, 1,048,576\]"),
        ("vocab_size", 70_000, r"a whole number in \[1, 65,536\]"),
        ("num_codebooks", 65, r"a whole number in \[1, 64\]"),
        ("num_key_value_heads", 3, r"a divisor of num_attention_heads \(4\)"),
        ("head_dim", 7, r"an even number in \[2, 1,024\]"),
        ("depth_decoder_config.num_hidden_layers", 1e9, r"a whole number in \[1, 64\]"),
        ("depth_decoder_config.hidden_size", None, "is missing"),
        ("rope_parameters.factor", "32", r"a number in \["),
    ],
)
def test_out_of_bounds_sizes_are_refused(hf_folder, key, value, allowed):
    edit_config(hf_folder, lambda c: set_key(c, key, value))
    with pytest.raises(CheckpointError, match=rf"config\.json of .*: {key} (must be )?{allowed}"):
        resolve_checkpoint(str(hf_folder))


def test_integral_floats_are_taken_as_ints(hf_folder):
    edit_config(hf_folder, lambda c: c.update(num_hidden_layers=2.0, hidden_size=64.0, num_codebooks=4.0))
    checkpoint = resolve_checkpoint(str(hf_folder))
    assert checkpoint.args.backbone.num_layers == 2 and isinstance(checkpoint.args.backbone.num_layers, int)
    assert checkpoint.args.audio_num_codebooks == 4 and isinstance(checkpoint.args.audio_num_codebooks, int)
    assert load_model(checkpoint, device="cpu").num_codebooks == 4


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("backbone_flavor.num_layers", 1e9, r"backbone_flavor\.num_layers must be a whole number in \[1, 64\]"),
        ("decoder_flavor.embed_dim", -32, r"decoder_flavor\.embed_dim must be a whole number in \[1, 16,384\]"),
        ("backbone_flavor.num_kv_heads", 3, r"backbone_flavor\.num_kv_heads must be a divisor of num_heads \(4\)"),
        ("backbone_flavor.rope_base", float("nan"), r"backbone_flavor\.rope_base must be a number"),
        ("backbone_flavor.heads", 4, r"unknown keys in backbone_flavor: \['heads'\]"),
        ("audio_num_codebooks", False, r"audio_num_codebooks must be a whole number in \[1, 64\], got False"),
        ("backbone_flavor", "llama-9B", r"backbone_flavor must be one of \['llama-100M', 'llama-1B'\]"),
    ],
)
def test_the_original_layout_is_bounded_the_same_way(oracle, tmp_path, key, value, match):
    folder = save_original_layout(oracle, tmp_path / "orig")
    edit_config(folder, lambda c: set_key(c, key, value))
    with pytest.raises(CheckpointError, match=match):
        resolve_checkpoint(str(folder))


def test_both_layouts_still_load_the_same_weights(oracle, tmp_path):
    original, transformers = (
        load_model(resolve_checkpoint(str(folder)), device="cpu", pack_weights=False).state_dict()
        for folder in (
            save_original_layout(oracle, tmp_path / "orig"),
            save_transformers_layout(oracle, tmp_path / "hf"),
        )
    )
    assert original.keys() == transformers.keys()
    assert all(torch.equal(original[k], transformers[k]) for k in original)


# ---------------------------------------------------------------------------------------------
# The codec


def test_an_absurd_codec_config_is_refused_when_the_config_is_read(hf_folder):
    edit_config(hf_folder, lambda c: c["codec_config"].update(num_hidden_layers=1e9))
    with pytest.raises(CheckpointError, match=r"codec_config\.num_hidden_layers must be a whole number in \[1, 64\]"):
        resolve_checkpoint(str(hf_folder))


@pytest.mark.parametrize(
    "key, value",
    [("hidden_size", 1e9), ("num_quantizers", 10**6), ("upsampling_ratios", [8, 6, 5, 1e9]), ("frame_rate", 0),
     ("sampling_rate", -24_000), ("num_key_value_heads", 3)],
)  # fmt: skip
def test_load_codec_refuses_an_absurd_config_before_building_anything(hf_folder, monkeypatch, key, value):
    config, state = codec_weights(resolve_checkpoint(str(hf_folder)))
    monkeypatch.setattr("csm.codec.MimiModel", lambda *a, **k: pytest.fail("the codec was built"))
    with pytest.raises(CheckpointError, match=rf"codec_config\.{key}"):
        load_codec(None, 4, codec_config={**config, key: value}, codec_state_dict=state)


def test_transformers_own_codec_checks_are_checkpoint_errors(hf_folder):
    config, state = codec_weights(resolve_checkpoint(str(hf_folder)))
    with pytest.raises(CheckpointError, match=r"(?s)not a valid Mimi config.*codebook_size. must be a power of 2"):
        load_codec(None, 4, codec_config={**config, "codebook_size": 63}, codec_state_dict=state)


def test_a_codec_config_with_integral_floats_loads(hf_folder):
    config, state = codec_weights(resolve_checkpoint(str(hf_folder)))
    floats = {**config, "hidden_size": 32.0, "upsampling_ratios": [8.0, 6, 5, 4]}
    assert load_codec(None, 4, codec_config=floats, codec_state_dict=state).model.config.hidden_size == 32


def test_a_codec_config_that_does_not_fit_its_weights_allocates_nothing(hf_folder, monkeypatch):
    import csm.codec

    config, state = codec_weights(resolve_checkpoint(str(hf_folder)))
    built_on = []

    def recording(config):
        built_on.append(torch.get_default_device())
        return real_mimi(config)

    real_mimi = csm.codec.MimiModel
    monkeypatch.setattr(csm.codec, "MimiModel", recording)
    with pytest.raises(ValueError, match="do not fit the codec config"):
        load_codec(None, 4, codec_config={**config, "num_hidden_layers": 64}, codec_state_dict=state)
    assert built_on == [torch.device("meta")]


# ---------------------------------------------------------------------------------------------
# Files stay inside the folder


def sharded_with_one_shard_moved(oracle, tmp_path, new_name) -> tuple:
    """A sharded checkpoint whose first shard now lies outside it, at tmp_path / "outside.safetensors"."""
    folder = tmp_path / "sharded"
    oracle.save_pretrained(folder, max_shard_size="100KB")
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    moved = sorted(set(index["weight_map"].values()))[0]
    outside = tmp_path / "outside.safetensors"
    shutil.move(folder / moved, outside)
    name = new_name(outside)
    index["weight_map"] = {k: (name if v == moved else v) for k, v in index["weight_map"].items()}
    index_path.write_text(json.dumps(index))
    return folder, outside


@pytest.mark.parametrize("new_name", [lambda outside: "../outside.safetensors", lambda outside: str(outside)],
                         ids=["dot-dot", "absolute"])  # fmt: skip
def test_a_shard_index_cannot_name_a_file_outside_the_folder(oracle, tmp_path, monkeypatch, new_name):
    folder, outside = sharded_with_one_shard_moved(oracle, tmp_path, new_name)
    assert outside.is_file() and (folder / new_name(outside)).is_file()  # it would be read, if allowed
    monkeypatch.setattr("csm.loading.TensorSource", lambda *a: pytest.fail("weights were read"))
    with pytest.raises(CheckpointError, match=r"shard named in model\.safetensors\.index\.json .* lies outside"):
        Model.from_pretrained(str(folder), device="cpu")


@pytest.mark.parametrize("name", ["sub//x.safetensors", "a\\b.safetensors", "./x.safetensors", "", 7, "x.pt"])
def test_a_shard_index_names_plain_safetensors_files_only(oracle, tmp_path, name):
    folder, _ = sharded_with_one_shard_moved(oracle, tmp_path, lambda outside: name)
    with pytest.raises(CheckpointError, match=r"shard named in model\.safetensors\.index\.json"):
        resolve_checkpoint(str(folder))


def test_a_link_out_of_the_folder_is_not_followed(hf_folder, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.move(hf_folder / "model.safetensors", elsewhere / "model.safetensors")
    (hf_folder / "model.safetensors").symlink_to(elsewhere / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"'model\.safetensors' is a link to .* outside the checkpoint folder"):
        resolve_checkpoint(str(hf_folder))


def test_other_files_are_confined_too(hf_folder, tmp_path):
    (tmp_path / "secret.json").write_text("{}")
    (hf_folder / "tokenizer.json").symlink_to(tmp_path / "secret.json")
    checkpoint = resolve_checkpoint(str(hf_folder))
    with pytest.raises(CheckpointError, match="'tokenizer.json' is a link to 'secret.json', which lies outside"):
        checkpoint.other_file("tokenizer.json")
    with pytest.raises(CheckpointError, match="'../secret.json' lies outside the checkpoint folder"):
        checkpoint.other_file("../secret.json")


def test_a_hugging_face_cache_snapshot_still_loads(hf_folder, tmp_path):
    """A snapshot's files are links into the repo's blobs/: that one way out is allowed."""
    repo = tmp_path / "hub" / "models--someone--csm"
    snapshot, blobs = repo / "snapshots" / "0123abc", repo / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    for i, file in enumerate(sorted(hf_folder.iterdir())):
        shutil.copy(file, blobs / f"blob{i}")
        (snapshot / file.name).symlink_to(os.path.relpath(blobs / f"blob{i}", snapshot))
    assert Model.from_pretrained(str(snapshot), device="cpu").num_codebooks == 4


def test_hub_file_names_are_checked_before_any_download(hf_folder, monkeypatch):
    index = {"weight_map": {"a": "model.safetensors", "b": "../../secrets.safetensors"}}
    (hf_folder / "model.safetensors.index.json").write_text(json.dumps(index))
    asked = []

    def download(repo_id, filename, **kwargs):  # a Hub repo that holds the folder's files
        asked.append(filename)
        return hf_folder / filename

    monkeypatch.setattr("csm.hub.download", download)
    with pytest.raises(CheckpointError, match=r"'\.\./\.\./secrets\.safetensors' lies outside the checkpoint folder"):
        resolve_checkpoint("someone/some-csm")
    assert asked == ["config.json", "model.safetensors.index.json"]


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"a": ' * 100_000])
def test_a_config_that_is_not_a_json_object_is_a_checkpoint_error(hf_folder, content):
    (hf_folder / "config.json").write_text(content)
    with pytest.raises(CheckpointError, match="config.json"):
        resolve_checkpoint(str(hf_folder))


def test_json_files_are_read_with_a_size_cap(hf_folder, monkeypatch):
    monkeypatch.setattr("csm.checkpoint.MAX_JSON_BYTES", 1000)
    with pytest.raises(CheckpointError, match=r"config\.json is over"):
        resolve_checkpoint(str(hf_folder))


# ---------------------------------------------------------------------------------------------
# What the app is told


def test_a_local_folder_is_described_by_its_name_only(hf_folder):
    description = _describe(resolve_checkpoint(str(hf_folder)))
    assert description == "hf (transformers layout, local folder)"
    assert "/" not in description and str(hf_folder.parent) not in description


def test_a_hub_repo_is_described_by_its_id(monkeypatch, oracle):
    def no_file(repo_id, filename, **kwargs):
        raise hub.HubFileError(f"{repo_id} has no file {filename}", hub.NO_FILE)

    monkeypatch.setattr("csm.checkpoint.hub.download", no_file)
    checkpoint = Checkpoint(source="sesame/csm-1b", layout="transformers", args=None, config={}, weight_files=[])
    assert _describe(checkpoint) == "sesame/csm-1b (transformers layout)"
