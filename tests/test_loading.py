"""Checkpoint loading: dtypes, and a clear CheckpointError for every way a checkpoint can be wrong."""

import json
from types import MappingProxyType

import httpx2
import pytest
import torch
from huggingface_hub import errors as hub_errors
from safetensors.torch import load_file, save_file

from csm.loading import (
    CheckpointError,
    DeviceError,
    codec_weights,
    cpu_computes_bf16,
    default_dtype,
    load_model,
    resolve_checkpoint,
    resolve_device,
)
from csm.models import Model
from tests.oracle import save_original_layout, save_transformers_layout


def rewrite_weights(folder, edit):
    path = folder / "model.safetensors"
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path))


def test_loads_into_requested_dtype_without_meta_tensors(hf_folder):
    model = Model.from_pretrained(str(hf_folder), device="cpu", dtype=torch.bfloat16)
    tensors = list(model.parameters())
    assert all(t.dtype == torch.bfloat16 and t.device.type == "cpu" for t in tensors)
    assert not any(t.is_meta for t in tensors)
    assert not any(t.requires_grad for t in tensors)


def test_transformers_layout_exposes_codec_weights(hf_folder, oracle):
    config, state = codec_weights(resolve_checkpoint(str(hf_folder)))
    assert config["model_type"] == "mimi"
    saved = load_file(str(hf_folder / "model.safetensors"))
    expected = {k[len("codec_model.") :]: v for k, v in saved.items() if k.startswith("codec_model.")}
    assert expected and set(expected) == set(state)
    assert all(torch.equal(state[k], v) for k, v in expected.items())


def test_missing_tensor_is_named(hf_folder):
    rewrite_weights(hf_folder, lambda s: s.pop("backbone_model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(CheckpointError, match=r"missing tensors: backbone_model\.layers\.1\.mlp\.up_proj\.weight"):
        Model.from_pretrained(str(hf_folder), device="cpu")


def test_unexpected_tensor_is_named(hf_folder):
    rewrite_weights(hf_folder, lambda s: s.update({"backbone_model.layers.7.extra.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match=r"unexpected tensors: backbone_model\.layers\.7\.extra\.weight"):
        Model.from_pretrained(str(hf_folder), device="cpu")


def test_shape_mismatch_is_named(hf_folder):
    def shrink(state):
        state["lm_head.weight"] = state["lm_head.weight"][:-1].clone()

    rewrite_weights(hf_folder, shrink)
    with pytest.raises(CheckpointError, match=r"shape mismatch for codebook0_head\.weight.*lm_head\.weight \[66, 64\]"):
        Model.from_pretrained(str(hf_folder), device="cpu")


def test_config_that_disagrees_with_weights(hf_folder):
    config = json.loads((hf_folder / "config.json").read_text())
    config["intermediate_size"] = 999
    (hf_folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"does not match its config.*mlp\.gate_up_proj"):
        Model.from_pretrained(str(hf_folder), device="cpu")


def test_original_layout_missing_tensor(oracle, tmp_path):
    folder = save_original_layout(oracle, tmp_path / "orig")
    rewrite_weights(folder, lambda s: s.pop("decoder.layers.0.sa_norm.scale"))
    with pytest.raises(CheckpointError, match=r"original layout.*missing tensors: decoder\.layers\.0\.sa_norm\.scale"):
        Model.from_pretrained(str(folder), device="cpu")


def test_unknown_layout(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    with pytest.raises(CheckpointError, match=r"unknown checkpoint layout.*model_type='llama'"):
        Model.from_pretrained(str(tmp_path), device="cpu")


def test_folder_without_config(tmp_path):
    with pytest.raises(CheckpointError, match="has no config.json"):
        Model.from_pretrained(str(tmp_path), device="cpu")


def test_missing_local_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no such folder"):
        Model.from_pretrained(str(tmp_path / "nope"), device="cpu")


def test_pickle_must_be_a_plain_state_dict(oracle, tmp_path):
    folder = save_original_layout(oracle, tmp_path / "orig", as_pickle=True)
    torch.save({"weights": [1, 2, 3]}, folder / "ckpt.pt")
    with pytest.raises(CheckpointError, match="does not hold a state dict of tensors"):
        Model.from_pretrained(str(folder), device="cpu")


def test_pickle_with_code_is_refused(oracle, tmp_path):
    folder = save_original_layout(oracle, tmp_path / "orig", as_pickle=True)
    torch.save({"x": torch.zeros(1), "obj": ValueError("arbitrary objects need unpickling code")}, folder / "ckpt.pt")
    with pytest.raises(CheckpointError, match="weights-only"):
        Model.from_pretrained(str(folder), device="cpu")


def test_gated_repo_without_token_says_what_to_do(monkeypatch):
    def gated(repo_id, filename, **kwargs):
        request = httpx2.Request("GET", f"https://huggingface.co/{repo_id}/resolve/main/{filename}")
        raise hub_errors.GatedRepoError("401 gated", response=httpx2.Response(401, request=request))

    monkeypatch.setattr("huggingface_hub.hf_hub_download", gated)
    with pytest.raises(CheckpointError, match=r"sesame/csm-1b is a gated repository.*HF_TOKEN"):
        Model.from_pretrained("sesame/csm-1b", device="cpu")


def test_unreachable_hub_says_what_to_do(monkeypatch, tmp_path):
    # A real hub call with the hub switched off and an empty cache.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(CheckpointError, match=r"Hub is unreachable.*local folder"):
        Model.from_pretrained("someone/some-csm", device="cpu")


def test_generate_frame_before_setup_caches_says_what_to_do(hf_folder):
    model = Model.from_pretrained(str(hf_folder), device="cpu")
    tokens = torch.zeros(1, 2, model.num_codebooks + 1, dtype=torch.long)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    with pytest.raises(RuntimeError, match=r"setup_caches"):
        model.generate_frame(tokens, mask, torch.arange(2)[None], temperature=1.0, topk=5)


def test_sharded_transformers_layout_loads_identically(oracle, tmp_path):
    sharded_folder = tmp_path / "sharded"
    oracle.save_pretrained(sharded_folder, max_shard_size="100KB")
    assert (sharded_folder / "model.safetensors.index.json").is_file()
    assert len(list(sharded_folder.glob("model-*.safetensors"))) > 1
    # Unpacked, so that every weight is in the state dict.
    single, sharded = (
        load_model(resolve_checkpoint(str(folder)), device="cpu", pack_weights=False).state_dict()
        for folder in (save_transformers_layout(oracle, tmp_path / "single"), sharded_folder)
    )
    assert single.keys() == sharded.keys() and len(single) > 10
    for k in single:
        assert torch.equal(single[k], sharded[k]), k
    assert Model.from_pretrained(str(sharded_folder), device="cpu").max_seq_len > 0  # the front door too


@pytest.fixture
def cpu_only(monkeypatch):
    """A machine with neither CUDA nor MPS, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_resolve_device_defaults_and_accepts_names_and_devices(cpu_only):
    assert resolve_device(None) == torch.device("cpu")
    for name in ("cpu", " CPU ", torch.device("cpu")):
        assert resolve_device(name) == torch.device("cpu")


@pytest.mark.parametrize("name", ["tpu", "gpu", "xla", "meta"])
def test_unknown_device_names_it_and_lists_what_is_here(cpu_only, name):
    with pytest.raises(DeviceError, match=rf"unknown device '{name}'.*available here: cpu$"):
        resolve_device(name)
    assert issubclass(DeviceError, ValueError)


def test_cuda_without_cuda_says_so(cpu_only):
    why = r"\((this torch build has no CUDA|no GPU found)\)"
    for name in ("cuda", "cuda:0", torch.device("cuda:1")):
        with pytest.raises(DeviceError, match=rf"^CUDA is not available here {why}; available: cpu$"):
            resolve_device(name)


def test_cuda_index_past_the_devices_is_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    message = r"there is no cuda:2: this machine has 2 CUDA device\(s\); available: cuda:0, cuda:1, cpu"
    with pytest.raises(DeviceError, match=message):
        resolve_device("cuda:2")


def test_mps_without_mps_says_so(cpu_only):
    with pytest.raises(DeviceError, match=r"MPS is not available here \(.*\); available: cpu"):
        resolve_device("mps")


def test_loading_onto_a_missing_device_fails_before_reading_weights(cpu_only, hf_folder, monkeypatch):
    from csm.generator import load_csm_1b

    monkeypatch.setattr("csm.loading.TensorSource", lambda *a: pytest.fail("weights were read"))
    with pytest.raises(DeviceError, match="CUDA is not available here"):
        Model.from_pretrained(str(hf_folder), device="cuda")
    with pytest.raises(DeviceError, match="unknown device 'gpu'"):
        load_csm_1b(device="gpu", repo_id=str(hf_folder))


@pytest.fixture
def cpu_flags(monkeypatch):
    """Set what the CPU reports (`torch.cpu.get_capabilities`); the rule is computed afresh, then forgotten."""

    def report(**flags):
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: MappingProxyType(flags), raising=False)
        cpu_computes_bf16.cache_clear()

    yield report
    cpu_computes_bf16.cache_clear()


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="this torch has no oneDNN bf16")
@pytest.mark.parametrize(
    "flags, cpu_dtype",
    [
        (dict(avx512_f=True, avx512_bf16=True), torch.bfloat16),
        (dict(amx_tile=True, amx_bf16=True, avx512_bf16=False), torch.bfloat16),
        (dict(avx512_f=True, avx512_bf16=False, amx_bf16=False), torch.float32),  # bf16 would be emulated
        (dict(avx2=True), torch.float32),
        (dict(architecture="arm64", neon=True), torch.float32),
    ],
)
def test_cpu_default_dtype_is_bf16_where_the_cpu_computes_it(cpu_flags, flags, cpu_dtype):
    cpu_flags(**flags)
    assert default_dtype(torch.device("cpu")) == cpu_dtype
    assert default_dtype(torch.device("cuda")) == torch.bfloat16
    assert default_dtype(torch.device("mps")) == torch.float32


def test_cpu_default_dtype_needs_onednn_bf16_too(cpu_flags, monkeypatch):
    cpu_flags(avx512_bf16=True, amx_bf16=True)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert default_dtype(torch.device("cpu")) == torch.float32


def test_cpu_capability_is_read_once(cpu_flags, monkeypatch):
    cpu_flags(avx512_bf16=False)
    first = default_dtype(torch.device("cpu"))
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: pytest.fail("asked again"), raising=False)
    assert default_dtype(torch.device("cpu")) == first == torch.float32


def test_loading_without_a_dtype_uses_the_default(hf_folder):
    model = Model.from_pretrained(str(hf_folder), device="cpu")
    assert model.dtype == default_dtype(torch.device("cpu"))
