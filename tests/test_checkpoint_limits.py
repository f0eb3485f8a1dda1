"""A hostile or broken checkpoint folder: absurd sizes are refused at once, files outside the folder are never read."""

import json
import time

import pytest
import torch

from csm.loading import CheckpointError, load_model, resolve_checkpoint
from csm.models import Model
from tests.oracle import build_oracle, save_original_layout, save_transformers_layout


@pytest.fixture(scope="module")
def oracle():
    return build_oracle("gqa-llama3")


@pytest.fixture
def hf_folder(oracle, tmp_path):
    return save_transformers_layout(oracle, tmp_path / "hf")


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
