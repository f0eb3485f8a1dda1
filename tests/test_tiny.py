"""csm.tiny: the offline random checkpoint loads in transformers exactly like sesame/csm-1b."""

import hashlib
import json

import pytest
import torch
from safetensors import safe_open

from csm.text import TextTokenizer, load_text_tokenizer
from csm.tiny import (
    SAMPLES_PER_FRAME,
    build_tiny_checkpoint,
    build_tiny_mimi_config,
    is_tiny_checkpoint,
    tiny_checkpoint_dir,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "seed0", seed=0)


@pytest.fixture(scope="module")
def model(folder):
    from transformers import CsmForConditionalGeneration

    model, info = CsmForConditionalGeneration.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    return model.eval()


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_same_bytes_other_seed_other_weights(folder, tmp_path):
    again = build_tiny_checkpoint(tmp_path / "again", seed=0)
    other = build_tiny_checkpoint(tmp_path / "other", seed=1)
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        assert _sha256(folder / name) == _sha256(again / name), name
    assert _sha256(folder / "model.safetensors") != _sha256(other / "model.safetensors")


def test_files_and_markers(folder):
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                 "tokenizer_config.json", "special_tokens_map.json", "README.md"):  # fmt: skip
        assert (folder / name).is_file(), name
    assert is_tiny_checkpoint(folder) and not is_tiny_checkpoint(folder.parent)
    assert "noise" in (folder / "README.md").read_text()


def test_config_matches_the_real_layout(folder):
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "csm" and config["architectures"] == ["CsmForConditionalGeneration"]
    assert config["vocab_size"] == config["codec_config"]["codebook_size"] + 3 == 2051
    assert config["num_codebooks"] == config["depth_decoder_config"]["num_codebooks"] == 8
    assert config["rope_parameters"]["rope_type"] == "llama3"
    codec = config["codec_config"]
    assert codec["model_type"] == "mimi" and codec["num_quantizers"] == 8
    assert codec["sampling_rate"] == 24_000 and codec["frame_rate"] == 12.5


def test_safetensors_holds_codec_and_both_audio_embeddings(folder):
    with safe_open(folder / "model.safetensors", "pt") as f:
        keys = set(f.keys())
        assert torch.equal(
            f.get_tensor("backbone_model.embed_tokens.embed_audio_tokens.weight"),
            f.get_tensor("depth_decoder.model.embed_tokens.weight"),
        )
    codec = {k for k in keys if k.startswith("codec_model.")}
    # The Hub's flat Mimi names, not transformers 5's in-memory ones.
    assert "codec_model.quantizer.semantic_residual_vector_quantizer.layers.0.codebook.embed_sum" in codec
    assert any(k.startswith("codec_model.decoder.layers.") for k in codec)
    assert any(k.startswith("codec_model.decoder_transformer.") for k in codec)
    assert {"lm_head.weight", "embed_text_tokens.weight", "depth_decoder.codebooks_head.weight"} <= keys


def test_tokenizer_ids_fit_the_config(folder):
    config = json.loads((folder / "config.json").read_text())
    tokenizer = load_text_tokenizer(folder, fallback=None)
    assert tokenizer.get_vocab_size(with_added_tokens=True) == config["text_vocab_size"]
    assert tokenizer.token_to_id("<|begin_of_text|>") == config["bos_token_id"]
    assert tokenizer.token_to_id("<|AUDIO|>") == config["audio_token_id"] == config["pad_token_id"]
    assert tokenizer.token_to_id("<|audio_eos|>") == config["audio_eos_token_id"]

    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    assert fast("[0]hello")["input_ids"] == TextTokenizer(tokenizer).encode_segment(0, "hello")


def test_generate_from_text(model, folder):
    ids = TextTokenizer.from_pretrained(folder, fallback=None).encode_segment(0, "hello")
    with torch.no_grad():
        codes = model.generate(
            input_ids=torch.tensor([ids]), max_new_tokens=3, do_sample=False, depth_decoder_do_sample=False
        )
    assert codes.shape == (1, 3, 8)
    assert int(codes.min()) >= 0 and int(codes.max()) < 2048 + 3


def test_codec_decodes_1920_samples_per_frame(model):
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 2048, (2, 1, 8, 5), generator=generator)
    with torch.no_grad():
        audio = [model.codec_model.decode(c).audio_values for c in codes]
    assert audio[0].shape == (1, 1, 5 * SAMPLES_PER_FRAME)
    assert not torch.allclose(audio[0], audio[1])  # random codebooks: the codes matter
    assert audio[0].abs().max() < 1.0


def test_mimi_config_is_reusable():
    from transformers import MimiConfig

    fields = build_tiny_mimi_config(num_codebooks=4)
    config = MimiConfig(**{k: v for k, v in fields.items() if k != "model_type"})
    assert config.num_quantizers == 4 and config.frame_size == SAMPLES_PER_FRAME and config.frame_rate == 12.5


def test_cached_dir_is_built_once(tmp_path, monkeypatch):
    monkeypatch.setenv("CSM_STUDIO_CACHE", str(tmp_path))
    first = tiny_checkpoint_dir(seed=3, num_codebooks=4)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert tiny_checkpoint_dir(seed=3, num_codebooks=4) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert first.parent == tmp_path and [p.name for p in tmp_path.iterdir()] == [first.name]  # no scratch left
    assert json.loads((first / "config.json").read_text())["num_codebooks"] == 4


def test_cli(tmp_path, capsys):
    from csm.tiny import main

    main([str(tmp_path / "cli"), "--seed", "2"])
    assert capsys.readouterr().out.strip() == str((tmp_path / "cli").resolve())
    assert is_tiny_checkpoint(tmp_path / "cli")
