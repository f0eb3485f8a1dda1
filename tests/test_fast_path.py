"""The CPU fast path (oneDNN-packed Linears, attention over the written cache slots only) against the plain path."""

import platform
import sys

import pytest
import torch

from csm.loading import load_model, resolve_checkpoint
from csm.models import Model
from csm.packing import PackedCodebookHeads, PackedLinear, can_pack_linear, pack_linear_weights
from tests.oracle import build_oracle, our_frames, save_transformers_layout
from tests.test_model_oracle import our_greedy_frames, prompt_parts

NUM_FRAMES = 24


def plain(model: Model) -> Model:
    model.backbone.attend_written_only = model.decoder.attend_written_only = False
    return model


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_transformers_layout(build_oracle("gqa-llama3", seed=5), tmp_path_factory.mktemp("fast"))


def load(folder, dtype, pack: bool) -> Model:
    return load_model(resolve_checkpoint(str(folder)), device="cpu", dtype=dtype, pack_weights=pack)


def test_cpu_loading_packs_every_transformer_linear_and_the_audio_heads(folder):
    fast = load(folder, torch.float32, pack=True)
    packed = [m for m in fast.modules() if isinstance(m, PackedLinear)]
    layers = len(fast.backbone.layers) + len(fast.decoder.layers)
    heads = fast.num_codebooks - 1
    assert len(packed) == 4 * layers + 1 + heads  # qkv, o, gate_up, down per layer, the projection, each head
    assert isinstance(fast.audio_head, PackedCodebookHeads) and "audio_head" not in dict(fast.named_parameters())
    assert not any(isinstance(m, torch.nn.Linear) for m in [*fast.backbone.modules(), *fast.decoder.modules()])
    assert not any(isinstance(m, PackedLinear) for m in load(folder, torch.float32, pack=False).modules())


def test_packing_is_a_function_that_packs_once_and_never_off_its_dtypes(folder):
    model = load(folder, torch.float32, pack=False)
    layers = len(model.backbone.layers) + len(model.decoder.layers)
    assert pack_linear_weights(model) == 4 * layers + 1 + 1  # and the audio heads
    assert pack_linear_weights(model) == 0  # already packed: nothing left to swap
    assert isinstance(model.projection, PackedLinear) and not isinstance(model.codebook0_head, PackedLinear)
    half = load(folder, torch.float16, pack=False)  # oneDNN packs fp32 and bf16 only
    assert pack_linear_weights(half) == 0 and not any(isinstance(m, PackedLinear) for m in half.modules())


def test_fast_path_gives_the_plain_path_frames(folder):
    fast, slow = load(folder, torch.float32, pack=True), plain(load(folder, torch.float32, pack=False))
    n = fast.num_codebooks
    tokens, mask = our_frames(prompt_parts(n, with_audio=True, seed=7), n)
    positions = torch.arange(tokens.shape[1])[None]
    fast.setup_caches(1), slow.setup_caches(1)
    with torch.no_grad():
        torch.testing.assert_close(
            fast.backbone_hidden(tokens, mask, positions), slow.backbone_hidden(tokens, mask, positions),
            atol=1e-5, rtol=0,
        )  # fmt: skip
    got, expected = our_greedy_frames(fast, tokens, mask, NUM_FRAMES), our_greedy_frames(slow, tokens, mask, NUM_FRAMES)
    assert torch.equal(got, expected)
    assert len(torch.unique(got[..., 0])) > 1


def test_attending_written_slots_only_equals_full_cache_with_mask(folder):
    """Decode steps after a prefill: the sliced, head-grouped attention gives the masked full-cache result."""
    sliced, full = load(folder, torch.float32, pack=False), plain(load(folder, torch.float32, pack=False))
    n = sliced.num_codebooks
    tokens, mask = our_frames(prompt_parts(n, with_audio=True, seed=8), n)
    for model in (sliced, full):
        model.setup_caches(1)
    with torch.no_grad():
        outputs = []
        for model in (sliced, full):
            hidden = [model.backbone_hidden(tokens, mask, torch.arange(tokens.shape[1])[None])[:, -1]]
            for step in range(5):  # the one-token path, at growing positions
                frame = torch.full((1, 1, n + 1), 3 + step)
                frame_mask = torch.ones_like(frame, dtype=torch.bool)
                hidden.append(model.backbone_hidden(frame, frame_mask, torch.tensor([[tokens.shape[1] + step]]))[:, -1])
            outputs.append(torch.stack(hidden))
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-5, rtol=0)


@pytest.mark.skipif(not can_pack_linear(torch.bfloat16), reason="this CPU has no oneDNN bf16 products")
def test_packing_in_bf16_gives_identical_frames(folder):
    fast, unpacked = load(folder, torch.bfloat16, pack=True), load(folder, torch.bfloat16, pack=False)
    assert isinstance(fast.audio_head, PackedCodebookHeads) and isinstance(unpacked.audio_head, torch.Tensor)
    hidden = torch.randn(3, fast.decoder.args.embed_dim, dtype=torch.bfloat16)
    for codebook in (1, fast.num_codebooks - 1):  # the packed heads give the plain product's very bits
        assert torch.equal(fast.codebook_logits(hidden, codebook), unpacked.codebook_logits(hidden, codebook))
    n = fast.num_codebooks
    tokens, mask = our_frames(prompt_parts(n, with_audio=True, seed=9), n)
    assert torch.equal(our_greedy_frames(fast, tokens, mask, 12), our_greedy_frames(unpacked, tokens, mask, 12))


def test_load_copies_weights_out_of_the_file_mapping(folder):
    """No parameter may stay a view of the memory-mapped safetensors file (it would pin the whole file)."""
    model = load(folder, torch.float32, pack=False)
    # A view of an mmap'd file has a storage that cannot be resized; memory we own can.
    assert all(p.untyped_storage().resizable() for p in model.parameters())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_embedding_a_prompt_in_blocks_gives_the_same_sums(folder, dtype):
    model = load(folder, dtype, pack=True)
    n = model.num_codebooks
    tokens, mask = our_frames(prompt_parts(n, with_audio=True, seed=3), n)
    assert tokens.shape[1] > 7
    whole = model.embed_frames(tokens, mask, block=tokens.shape[1])
    assert torch.equal(model.embed_frames(tokens, mask, block=7), whole)  # blocks of 7 and a shorter last one
    assert torch.equal(model.embed_frames(tokens, mask), whole)  # the default block


def test_loading_hands_freed_memory_back(folder, monkeypatch):
    """The temporaries of loading are given back to the system once the model is built (glibc)."""
    calls = []
    monkeypatch.setattr("csm.loading.release_freed_memory", lambda: calls.append("trim") or True)
    load(folder, torch.float32, pack=True)
    assert calls == ["trim"]
    from csm.loading import release_freed_memory

    monkeypatch.undo()
    # True where the C library is glibc (the only one with malloc_trim), False elsewhere.
    assert release_freed_memory() is (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_load_that_packs_tensor_by_tensor_gives_the_model_of_a_whole_load(folder, dtype):
    """load_model packs each weight as it is read (the plain model is never whole beside the packed one): the
    same modules and the same outputs, bit for bit, as packing after a whole plain load."""
    if not can_pack_linear(dtype):
        pytest.skip(f"this CPU has no oneDNN {dtype} products")
    streamed, whole = load(folder, dtype, pack=True), load(folder, dtype, pack=False)
    assert pack_linear_weights(whole) > 0
    assert not any(p.is_meta for p in streamed.parameters())
    assert [type(m) for m in streamed.modules()] == [type(m) for m in whole.modules()]
    n = whole.num_codebooks
    tokens, mask = our_frames(prompt_parts(n, with_audio=True, seed=4), n)
    assert torch.equal(our_greedy_frames(streamed, tokens, mask, 6), our_greedy_frames(whole, tokens, mask, 6))
    hidden = torch.randn(2, whole.decoder.args.embed_dim, dtype=dtype)
    assert torch.equal(streamed.codebook_logits(hidden, 1), whole.codebook_logits(hidden, 1))


def test_the_packing_probe_answers_for_the_cpu_whatever_the_default_device():
    """Its answer is cached for the process: asked first under another default device, it must not say False."""
    can_pack_linear.cache_clear()
    try:
        with torch.device("meta"):
            under_meta = can_pack_linear(torch.float32)
        can_pack_linear.cache_clear()
        assert under_meta == can_pack_linear(torch.float32)
    finally:
        can_pack_linear.cache_clear()


@pytest.mark.skipif(not can_pack_linear(torch.float32), reason="this build has no oneDNN products")
def test_a_cpu_load_packs_each_weight_before_reading_the_next(folder, monkeypatch):
    """The load's memory: never a plain Linear of the stacks in the model while the checkpoint is read (a
    whole plain load, then packing, would hold both layouts of many weights), and the packed ones grow."""
    import csm.loading as loading

    plain_linears, packed = [], []
    read = loading.mapped_tensors

    def watched(checkpoint, model, source):
        for item in read(checkpoint, model, source):
            stacks = [*model.backbone.modules(), *model.decoder.modules()]
            plain_linears.append(sum(isinstance(m, torch.nn.Linear) and not m.weight.is_meta for m in stacks))
            packed.append(sum(isinstance(m, PackedLinear) for m in model.modules()))
            yield item

    monkeypatch.setattr(loading, "mapped_tensors", watched)
    model = load(folder, torch.float32, pack=True)
    layers = len(model.backbone.layers) + len(model.decoder.layers)
    assert len(plain_linears) > 10 and max(plain_linears) == 0
    assert packed == sorted(packed) and packed[-1] >= 4 * layers
