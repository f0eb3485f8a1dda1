"""int8 weight-only quantization (csm.quantize): bounded error, both checkpoint layouts, greedy codes that agree."""

import pytest
import torch
import torch.nn as nn

from bench.accuracy import compare
from csm.generator import load_csm_1b
from csm.loading import load_model, resolve_checkpoint
from csm.models import Model
from csm.quantize import (
    Int8CodebookHeads,
    Int8Embedding,
    Int8Linear,
    has_dynamic_int8_kernel,
    has_int8_kernel,
    quantize_int8,
    quantize_per_channel,
)
from csm.tiny import tiny_checkpoint_dir
from tests.oracle import build_oracle, our_frames, save_original_layout, save_transformers_layout
from tests.test_model_oracle import prompt_parts


needs_dynamic_int8 = pytest.mark.skipif(not has_dynamic_int8_kernel(), reason="int8-dynamic needs AVX-512 VNNI")


@pytest.fixture(scope="module")
def oracle():
    return build_oracle("gqa-llama3", seed=3)


@pytest.fixture(scope="module")
def tiny():
    return resolve_checkpoint(str(tiny_checkpoint_dir()))


def linears_per_model(model: Model) -> int:
    """qkv, o, gate_up and down per layer, the projection and codebook0_head."""
    return 4 * (len(model.backbone.layers) + len(model.decoder.layers)) + 2


def test_each_weight_is_within_half_a_step():
    weight = torch.randn(64, 48) * torch.logspace(-3, 1, 64)[:, None]  # rows of very different sizes
    weight[5] = 0  # an all-zero row must not divide by zero
    ints, scales = quantize_per_channel(weight, torch.bfloat16)
    assert ints.dtype == torch.int8 and scales.dtype == torch.bfloat16 and ints.abs().max() <= 127
    error = (ints.float() * scales.float()[:, None] - weight).abs()
    assert (error <= scales.float()[:, None] / 2 * (1 + 1e-6)).all()
    assert torch.equal(ints[5], torch.zeros_like(ints[5]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("rows", [1, 2, 300])  # decode steps use the int8 kernel, a prefill's many rows do not
def test_int8_linear_error_is_within_its_bound(dtype, rows):
    """|y_int8 - y| <= sum_k |x_k| * scale_j / 2 (half a step per weight) plus the rounding of bf16 products.

    The second term: activations rounded to bf16 for the product (2^-9 relative) and bf16 outputs
    (2^-9), bounded loosely by 2^-7 * (sum_k |x_k w_jk| + |y_j|).
    """
    torch.manual_seed(0)
    weight = torch.randn(80, 64) / 8
    x = torch.randn(rows, 64)
    linear = Int8Linear(weight.to(dtype))
    got = linear(x.to(dtype)).float()
    exact = x @ weight.to(dtype).float().T
    step_term = x.abs().sum(-1, keepdim=True) * linear.scales.float() / 2
    rounding = 2**-7 * ((x.abs() @ weight.abs().T) + exact.abs())
    assert ((got - exact).abs() <= step_term + rounding).all()
    # Typically far less: rounding errors are independent and uniform within half a step, so the
    # error of output j has a standard deviation of |x| * scale_j / sqrt(12) (measured 1.0 to 1.1x that).
    expected_rms = (x.pow(2).sum(-1, keepdim=True) * linear.scales.float().pow(2) / 12).mean().sqrt()
    assert (got - exact).pow(2).mean().sqrt() <= 1.5 * expected_rms
    assert linear(x.to(dtype)).dtype == dtype


def test_input_widths_the_kernel_cannot_take_use_the_plain_product():
    """torch's CPU bf16 int8 kernel crashes on input widths that are not a multiple of 16."""
    linear = Int8Linear(torch.randn(8, 24, dtype=torch.bfloat16))
    assert not linear.use_kernel
    assert linear(torch.randn(1, 24, dtype=torch.bfloat16)).shape == (1, 8)
    assert Int8Linear(torch.randn(8, 32, dtype=torch.bfloat16)).use_kernel == has_int8_kernel(
        torch.device("cpu"), torch.bfloat16
    )


def test_quantize_swaps_every_linear_the_audio_heads_and_the_embeddings(tiny):
    model = load_model(tiny, device="cpu", dtype=torch.bfloat16, quantize="int8")
    assert sum(isinstance(m, Int8Linear) for m in model.modules()) == linears_per_model(model) + model.num_codebooks - 1
    assert not any(isinstance(m, (nn.Linear, nn.Embedding)) for m in model.modules())
    assert isinstance(model.audio_head, Int8CodebookHeads) and "audio_head" not in dict(model.named_parameters())
    assert isinstance(model.text_embeddings, Int8Embedding) and isinstance(model.audio_embeddings, Int8Embedding)
    assert model.dtype == torch.bfloat16 and model.device.type == "cpu"
    # What stays float: the norms alone.
    assert {name.split(".")[-2] for name, _ in model.named_parameters()} <= {"attn_norm", "mlp_norm", "norm"}
    assert quantize_int8(model) == 0  # nothing left to swap
    fresh = load_model(tiny, device="cpu", dtype=torch.bfloat16, pack_weights=False)
    assert quantize_int8(fresh) == linears_per_model(fresh) + 2 + 1  # the Linears, the two tables, the heads


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_an_int8_embedding_row_is_its_dequantized_row(dtype):
    """A looked-up row is q * scale rounded once in `dtype`, within half a step of the float row."""
    table = torch.randn(300, 64, dtype=dtype) * torch.linspace(0.01, 3, 300, dtype=dtype)[:, None]
    embedding = Int8Embedding(table)
    ids = torch.tensor([[0, 7, 299], [150, 150, 3]])
    rows = embedding(ids)
    assert rows.dtype == dtype and rows.shape == (2, 3, 64)
    expected = (embedding.weight[ids].to(dtype) * embedding.scales[ids][..., None]).to(dtype)
    assert torch.equal(rows, expected)
    # Half a step of the row's scale, plus the one rounding of the product in `dtype`.
    bound = embedding.scales[ids].float()[..., None] / 2 + table[ids].float().abs() * torch.finfo(dtype).eps
    assert ((rows.float() - table[ids].float()).abs() <= bound).all()
    assert embedding.weight.dtype == torch.int8 and embedding.weight.nbytes == table.numel()


def test_quantizing_in_blocks_of_rows_equals_quantizing_at_once(monkeypatch):
    weight = torch.randn(37, 40, dtype=torch.bfloat16)
    whole = quantize_per_channel(weight, torch.bfloat16)
    monkeypatch.setattr("csm.quantize.QUANTIZE_BLOCK_ELEMENTS", 3 * 40)  # 3 rows a block, 13 blocks
    blocked = quantize_per_channel(weight, torch.bfloat16)
    assert torch.equal(whole[0], blocked[0]) and torch.equal(whole[1], blocked[1])


def test_invalid_quantize_is_a_clear_value_error_before_any_weight_is_read(tiny, monkeypatch):
    monkeypatch.setattr("csm.loading.TensorSource", lambda *a: pytest.fail("weights were read"))
    for bad in ("int4", "INT8", 8, True):
        with pytest.raises(ValueError, match=r"quantize must be None or one of \['int8', 'int8-dynamic'\], got"):
            load_model(tiny, device="cpu", quantize=bad)
    with pytest.raises(ValueError, match="quantize must be"):
        load_csm_1b(device="cpu", repo_id=str(tiny_checkpoint_dir()), quantize="fp8")
    with pytest.raises(ValueError, match="quantize must be"):
        Model.from_pretrained(str(tiny_checkpoint_dir()), device="cpu", quantize="nf4")


@pytest.mark.parametrize("quantize", ["int8", pytest.param("int8-dynamic", marks=needs_dynamic_int8)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_int8_stays_close_to_float_on_the_tiny_model(tiny, dtype, quantize):
    """int8 against the same model in `dtype`, over bench.bench's 312-frame prompt and 24 greedy frames.
    int8-dynamic, with its second rounding (of activations), keeps within the same bounds on this model
    (measured: 39 dB, 6 %, 0.9 %, 97 %); on CSM-1B's shapes it costs about 1 dB (bench/RESULTS.md).

    Bounds, about 2x what is measured, so that a real regression (a wrong scale, a transposed head)
    fails and rounding does not: each weight is off by at most half a step (1/254 of its row's
    largest), noise that partly cancels in each sum, so every block keeps an SNR above 30 dB
    (measured 40 to 53); the codebook-0 logits move by at most 12 % of their standard deviation
    (measured 4 to 7 %; bf16 against fp32 alone moves them 3 %), 2 % on average; and at least 90 %
    of greedy codes, decided one at a time on the same history, are the same (measured 97 %).
    """
    reference = load_model(tiny, device="cpu", dtype=dtype)
    quantized = load_model(tiny, device="cpu", dtype=dtype, quantize=quantize)
    from bench.bench import our_frames as bench_frames
    from bench.bench import prompt_parts as bench_prompt

    n = reference.num_codebooks
    tokens, mask = bench_frames(bench_prompt(n, reference.config.text_vocab_size, 0), n)
    figures = compare(reference, quantized, tokens, mask, count=24)
    assert min(figures["layer_snr_db"].values()) > 30
    std = figures["codebook0_logit_std"]
    assert figures["codebook0_logit_error_max"] <= 0.12 * std
    assert figures["codebook0_logit_error_mean"] <= 0.02 * std
    assert figures["teacher_forced_code_agreement"] >= 0.9


@pytest.mark.parametrize("quantize", ["int8", pytest.param("int8-dynamic", marks=needs_dynamic_int8)])
def test_a_load_that_quantizes_tensor_by_tensor_makes_the_model_of_a_whole_load(tiny, quantize):
    """load_model quantizes each tensor as it is assigned (the float model is never whole in memory): the
    same int8 model as a float load quantized afterwards, weights and outputs."""
    streamed = load_model(tiny, device="cpu", dtype=torch.bfloat16, quantize=quantize)
    whole = load_model(tiny, device="cpu", dtype=torch.bfloat16, pack_weights=False)
    assert quantize_int8(whole, dynamic=quantize == "int8-dynamic") > 0
    assert not any(p.is_meta for p in streamed.parameters())
    assert [type(m) for m in streamed.modules()] == [type(m) for m in whole.modules()]
    if quantize == "int8":  # int8-dynamic's packed weights have no state_dict: compared by their outputs below
        a, b = streamed.state_dict(), whole.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    n = whole.num_codebooks
    tokens, mask = our_frames(prompt_parts(n, with_audio=True, seed=5), n)
    hidden = []
    for model in (streamed, whole):
        model.setup_caches(1)
        hidden.append(model.backbone_hidden(tokens, mask, torch.arange(tokens.shape[1])[None]))
    assert torch.equal(*hidden)


def test_an_int8_load_quantizes_each_weight_before_reading_the_next(tiny, monkeypatch):
    """The load's memory: never a float Linear in the model while the checkpoint is read, and the int8 ones
    already there (a whole float load would hold 2x the int8 model's bytes, and more in fp32 on a CPU)."""
    import csm.loading as loading

    float_linears, int8_modules = [], []
    read = loading.mapped_tensors

    def watched(checkpoint, model, source):
        for item in read(checkpoint, model, source):
            modules = list(model.modules())
            float_linears.append(sum(isinstance(m, nn.Linear) and not m.weight.is_meta for m in modules))
            int8_modules.append(sum(isinstance(m, (Int8Linear, Int8Embedding)) for m in modules))
            yield item

    monkeypatch.setattr(loading, "mapped_tensors", watched)
    model = load_model(tiny, device="cpu", dtype=torch.bfloat16, quantize="int8")
    assert len(float_linears) > 10 and max(float_linears) == 0
    assert int8_modules == sorted(int8_modules) and int8_modules[-1] >= linears_per_model(model)


def test_quantized_model_loads_identically_from_both_layouts(oracle, tmp_path):
    loaded = [
        load_model(resolve_checkpoint(str(folder)), device="cpu", dtype=torch.bfloat16, quantize="int8")
        for folder in (
            save_transformers_layout(oracle, tmp_path / "hf"),
            save_original_layout(oracle, tmp_path / "orig"),
        )
    ]
    transformers_layout, original_layout = (model.state_dict() for model in loaded)
    assert transformers_layout.keys() == original_layout.keys()
    assert any(t.dtype == torch.int8 for t in transformers_layout.values())
    for key, tensor in transformers_layout.items():
        assert torch.equal(tensor, original_layout[key]), key
    n = loaded[0].num_codebooks
    tokens, mask = our_frames(prompt_parts(n, with_audio=True, seed=4), n)
    frames = []
    for model in loaded:
        model.setup_caches(1)
        frames.append(model.generate_frame(tokens, mask, torch.arange(tokens.shape[1])[None], 1.0, topk=1))
    assert torch.equal(frames[0], frames[1])


def test_generator_runs_int8_and_caches_it_apart(tiny):
    repo = str(tiny_checkpoint_dir())
    generator = load_csm_1b(device="cpu", repo_id=repo, quantize="int8")
    assert load_csm_1b(device="cpu", repo_id=repo, quantize="int8") is generator
    assert load_csm_1b(device="cpu", repo_id=repo) is not generator
    assert isinstance(generator.model.audio_head, Int8CodebookHeads)
    codec_linears = [type(m) for m in generator.codec.model.modules() if isinstance(m, (nn.Linear, Int8Linear))]
    assert codec_linears and set(codec_linears) == {Int8Linear}  # the codec's transformers too
    assert generator.description.endswith(", int8 weights")
    assert "int8" not in load_csm_1b(device="cpu", repo_id=repo).description
    audio = generator.generate("Quantized.", 0, [], max_audio_length_ms=800, seed=1)
    assert audio.numel() > 0 and torch.isfinite(audio).all()


def test_the_cpu_conversion_buffer_is_reused_and_exact():
    from csm.quantize import converted

    large, small = (torch.randint(-127, 128, shape, dtype=torch.int8) for shape in ((64, 48), (16, 8)))
    with torch.inference_mode():  # made in a prefill, written again outside inference mode
        first = converted(large, torch.bfloat16)
    assert torch.equal(first.float(), large.float())
    second = converted(small, torch.bfloat16)
    assert torch.equal(second.float(), small.float()) and second.data_ptr() == first.data_ptr()


def test_quantizing_leaves_the_float_weight_as_it_was():
    weight = torch.randn(32, 16)
    before = weight.clone()
    quantize_per_channel(weight, torch.float32)
    quantize_per_channel(weight.T, torch.float32)  # transposed, as the audio heads are
    assert torch.equal(weight, before)


def test_the_prefill_product_by_blocks_of_channels_equals_the_whole_weight(monkeypatch):
    """Many rows (a prefill) go through the weight converted a block of output channels at a time."""
    linear = Int8Linear(torch.randn(50, 32, dtype=torch.bfloat16))
    rows = torch.randn(40, 32, dtype=torch.bfloat16)  # more than KERNEL_MAX_ROWS: the converted product
    whole = torch.nn.functional.linear(rows, linear.weight.to(torch.bfloat16)) * linear.scales
    monkeypatch.setattr("csm.quantize.CONVERT_BLOCK_ELEMENTS", 7 * 32)  # 7 channels a block, 8 blocks
    assert torch.equal(linear(rows), whole)
