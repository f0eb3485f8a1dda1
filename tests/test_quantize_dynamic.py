"""int8 weights with int8 activations after each norm (`quantize="int8-dynamic"`, csm.quantize): bounded error,
rows quantized each alone (takes do not touch each other), the modules it swaps, and where it is refused."""

import os
import subprocess
import sys

import pytest
import torch

from csm.generator import load_csm_1b
from csm.loading import load_model, resolve_checkpoint
from csm.quantize import (
    DYNAMIC_BLOCK_ROWS,
    DYNAMIC_SLOTS,
    DynamicInt8CodebookHeads,
    DynamicInt8Linear,
    Int8Embedding,
    Int8Linear,
    check_quantize,
    has_dynamic_int8_kernel,
    quantize_scheme,
)
from csm.tiny import tiny_checkpoint_dir
from tests.test_takes import context, run

needs_kernel = pytest.mark.skipif(
    not has_dynamic_int8_kernel(), reason="int8-dynamic needs a CPU with VNNI and torch's fbgemm (x86 engine)"
)


@pytest.fixture(scope="module")
def tiny():
    return resolve_checkpoint(str(tiny_checkpoint_dir()))


@pytest.fixture(scope="module")
def generator():
    return load_csm_1b(device="cpu", repo_id=str(tiny_checkpoint_dir()), quantize="int8-dynamic")


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("rows", [1, 3, 300])
def test_dynamic_linear_error_is_within_its_bound(dtype, rows):
    """Each weight is off by at most half its row's step (scale_j / 2) and each activation by half of its row's
    step (max|x| / 127 / 2), so |y - exact| <= sum_k |x_k| s_j / 2 + (|w_jk| + s_j / 2) max|x| / 254,
    plus the rounding of a bf16 output (2^-8 relative, loosely)."""
    torch.manual_seed(0)
    weight = torch.randn(80, 64) / 8
    x = torch.randn(rows, 64) * torch.logspace(-2, 2, rows)[:, None]  # rows of very different sizes
    linear = DynamicInt8Linear(weight.to(dtype))
    got = linear(x.to(dtype))
    assert got.dtype == dtype and got.shape == (rows, 80)
    x, weight = x.to(dtype).float(), weight.to(dtype).float()
    exact = x @ weight.T
    scales = weight.abs().amax(1) / 127  # as csm.quantize.quantize_per_channel makes them
    largest = x.abs().amax(1, keepdim=True)
    weight_term = x.abs().sum(-1, keepdim=True) * scales / 2
    activation_term = (weight.abs() + scales[:, None] / 2).sum(-1) * largest / 254
    rounding = 2**-8 * (exact.abs() + weight_term)
    assert ((got.float() - exact).abs() <= (weight_term + activation_term) * 1.01 + rounding).all()


@needs_kernel
def test_each_row_is_quantized_alone_whatever_the_others():
    """fbgemm quantizes a whole input with one range: a row's result must not depend on its neighbours."""
    torch.manual_seed(1)
    linear = DynamicInt8Linear(torch.randn(96, 128, dtype=torch.bfloat16))
    x = torch.randn(5, 128, dtype=torch.bfloat16) * torch.tensor([1e-3, 1.0, 1e3, 0.0, 7.0])[:, None].bfloat16()
    x[4] = x[4].abs()  # all positive: alone, its range would have no negative end
    batched = linear(x)
    assert torch.equal(batched[3], torch.zeros_like(batched[3]))  # an all-zero row stays zero
    for i in range(len(x)):
        assert torch.equal(linear(x[i : i + 1]), batched[i : i + 1]), i
    assert torch.equal(linear(x[None, 1:3])[0], batched[1:3])  # any leading shape


@needs_kernel
def test_a_prefill_in_blocks_of_rows_equals_every_row_alone():
    """More rows than DYNAMIC_BLOCK_ROWS go through fbgemm a block at a time (less memory): the same bits."""
    torch.manual_seed(2)
    linear = DynamicInt8Linear(torch.randn(96, 128, dtype=torch.bfloat16))
    x = torch.randn(1, 2 * DYNAMIC_BLOCK_ROWS + 5, 128, dtype=torch.bfloat16)
    blocked = linear(x)
    assert blocked.shape == (1, x.shape[1], 96)
    alone = torch.cat([linear.product(row[None]) for row in x[0]])
    assert torch.equal(blocked[0], alone)


@needs_kernel
def test_activations_are_rounded_to_a_symmetric_grid_of_each_rows_largest_over_127():
    """The row's largest value and its negation come back exact, and every other value on its grid."""
    linear = DynamicInt8Linear(torch.eye(8))  # each weight row's largest is 1: q = 127, scale 1/127, exact
    x = torch.tensor([[3.0, -3.0, 1.5, 0.0, 0.75, -0.3, 2.0, 1.0]])
    on_grid = (x / 3 * 127).round() / 127 * 3
    assert torch.allclose(linear(x), on_grid, atol=1e-6, rtol=0) and linear(x)[0, :2].tolist() == [3.0, -3.0]


@needs_kernel
def test_a_cpu_whose_int8_sums_saturate_is_found_out():
    """fbgemm without VNNI (forced here to its AVX2 path) sums pairs of products in 16 bits, which saturate."""
    code = "from csm.quantize import has_dynamic_int8_kernel; print(has_dynamic_int8_kernel())"
    env = {**os.environ, "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "False", run.stderr


@needs_kernel
def test_its_packed_weights_have_no_state_dict_to_save_and_say_so():
    with pytest.raises(RuntimeError, match="no state_dict.*load it with quantize='int8-dynamic'"):
        DynamicInt8Linear(torch.randn(8, 16)).state_dict()


@needs_kernel
def test_dynamic_quantize_swaps_the_products_after_a_norm_and_the_rest_as_int8(tiny):
    model = load_model(tiny, device="cpu", dtype=torch.bfloat16, quantize="int8-dynamic")
    dynamic = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, DynamicInt8Linear)}
    weight_only = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, Int8Linear)}
    assert dynamic == {*DYNAMIC_SLOTS, *(str(i) for i in range(model.num_codebooks - 1))}  # and the audio heads
    assert weight_only == {"o_proj", "down_proj", "projection"}
    assert isinstance(model.audio_head, DynamicInt8CodebookHeads)
    assert isinstance(model.text_embeddings, Int8Embedding) and isinstance(model.audio_embeddings, Int8Embedding)
    assert {name.split(".")[-2] for name, _ in model.named_parameters()} <= {"attn_norm", "mlp_norm", "norm"}
    assert model.dtype == torch.bfloat16 and quantize_scheme("int8-dynamic") == 2


@needs_kernel
def test_greedy_takes_each_equal_the_single_take(generator):
    single, info = run(generator, context=context(1), topk=1, seed=0)
    _, batched = run(generator, context=context(1), topk=1, seed=0, takes=3)
    assert info.frames > 2 and all(torch.equal(take.codes, info.codes) for take in batched.takes)
    assert generator.description.endswith(", int8 weights and int8 activations after norms")


def test_where_it_cannot_run_it_is_refused_before_any_weight_is_read(tiny, monkeypatch):
    monkeypatch.setattr("csm.loading.TensorSource", lambda *a: pytest.fail("weights were read"))
    monkeypatch.setattr("csm.quantize.has_dynamic_int8_kernel", lambda: False)
    with pytest.raises(
        ValueError, match=r"int8-dynamic' runs only on a CPU with AVX-512 VNNI.*use quantize='int8', or the CPU"
    ):
        load_model(tiny, device="cpu", quantize="int8-dynamic")
    with pytest.raises(ValueError, match="not on meta"):
        check_quantize("int8-dynamic", torch.device("meta"))
    assert check_quantize("int8", torch.device("meta")) == "int8"  # weight-only int8 runs anywhere


def test_the_app_refuses_it_at_start_where_it_cannot_run(monkeypatch, capsys):
    from studio.cli import parse_args

    monkeypatch.setattr("csm.quantize.has_dynamic_int8_kernel", lambda: False)
    with pytest.raises(SystemExit) as refused:
        parse_args(["--model", "tiny", "--device", "cpu", "--quantize", "int8-dynamic"])
    assert refused.value.code == 2
    assert (
        "--quantize int8-dynamic: quantize='int8-dynamic' runs only on a CPU with AVX-512 VNNI"
        in capsys.readouterr().err
    )
    assert parse_args(["--model", "tiny", "--device", "cpu", "--quantize", "int8"]).quantize == "int8"


@needs_kernel
def test_the_app_takes_it_where_it_runs():
    from studio.cli import parse_args

    assert parse_args(["--model", "tiny", "--device", "cpu", "--quantize", "int8-dynamic"]).quantize == "int8-dynamic"


@needs_kernel
def test_the_bench_runs_each_scheme_in_its_own_worker():
    from bench.bench import RUNNERS, parse_args
    from csm.quantize import QUANTIZE_CHOICES

    for scheme in QUANTIZE_CHOICES:
        assert RUNNERS[f"ours-{scheme}"].quantize == scheme
        assert parse_args(["--quantize", scheme, "--device", "cpu"]).quantize == scheme


def test_the_bench_tools_refuse_it_as_a_usage_error_where_it_cannot_run(monkeypatch, capsys):
    from bench import accuracy, bench, profile_frame

    monkeypatch.setattr("csm.quantize.has_dynamic_int8_kernel", lambda: False)
    for main in (bench.parse_args, accuracy.main, profile_frame.main):
        with pytest.raises(SystemExit) as refused:
            main(["--quantize", "int8-dynamic", "--device", "cpu"])
        assert refused.value.code == 2 and "--quantize int8-dynamic: quantize='int8-dynamic' runs only" in (
            capsys.readouterr().err
        )
