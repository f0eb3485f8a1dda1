"""The depth decoder's step compiled by inductor (csm.compiling, CPU, opt-in) against the default eager step.

Compiling needs a C++ compiler: where there is none, the tests that compile are skipped (the fallback
test needs none). Compiling the tiny model takes a few seconds per shape, so the compiled model is
built once per module.
"""

import logging

import pytest
import torch

import csm.compiling as compiling
from csm.compiling import check_compile_decoder, decoder_is_compiled
from csm.loading import load_model, resolve_checkpoint
from csm.models import KVCache
from csm.packing import PackedLinear, can_pack_linear
from csm.tiny import tiny_checkpoint_dir
from tests.oracle import our_frames
from tests.test_model_oracle import our_greedy_frames, prompt_parts


def has_cpp_compiler() -> bool:
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return bool(get_cpp_compiler())
    except Exception:  # inductor's own check: none found, or one that does not run
        return False


needs_compiler = pytest.mark.skipif(not has_cpp_compiler(), reason="no C++ compiler for inductor on this machine")


def load(dtype=torch.float32, **options):
    return load_model(resolve_checkpoint(str(tiny_checkpoint_dir())), device="cpu", dtype=dtype, **options)


@pytest.fixture(scope="module")
def compiled():
    if not has_cpp_compiler():
        pytest.skip("no C++ compiler for inductor on this machine")
    return load(compile_decoder=True)


@pytest.fixture(scope="module")
def eager():
    return load()


def kinds(model) -> list[type]:
    """The model's module types, its KV caches left out (compiling warms up on caches; they are not weights)."""
    return [type(module) for module in model.modules() if not isinstance(module, KVCache)]


def tiny_prompt(model):
    n = model.num_codebooks
    return our_frames(prompt_parts(n, with_audio=True, seed=3), n)


@needs_compiler
@pytest.mark.slow
def test_the_compiled_step_runs_the_default_models_own_packed_weights(compiled, eager):
    """Compiling adds no module and no weight: inductor takes the packed weights as they are."""
    assert decoder_is_compiled(compiled) and not compiled.decoder.attend_written_only
    assert kinds(compiled) == kinds(eager) and "decoder_step" not in eager.__dict__
    if can_pack_linear(torch.float32):
        assert isinstance(compiled.decoder.layers[0].mlp.down_proj, PackedLinear)


@needs_compiler
@pytest.mark.slow
def test_compiled_step_gives_eager_states_within_float32_rounding(compiled, eager):
    width = compiled.config.backbone.embed_dim
    g = torch.Generator().manual_seed(0)
    for model in (compiled, eager):
        model.setup_caches(1)
    with torch.inference_mode():
        inputs, positions = torch.randn(1, 2, width, generator=g), torch.arange(2)[None]
        for _ in range(5):  # the first step's two positions, then one at a time
            ours, theirs = compiled.decoder_step(inputs, positions), eager.decoder_step(inputs, positions)
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
            inputs, positions = torch.randn(1, 1, width, generator=g), positions[:, -1:] + 1
    assert decoder_is_compiled(compiled)  # it did not fall back on the way


@needs_compiler
@pytest.mark.slow
def test_compiled_greedy_frames_equal_eager_ones_also_after_the_caches_are_set_up_anew(compiled, eager):
    """Greedy frames hide fp32's last-bit differences; caches made anew (more rows, as for takes) must be read,
    not the ones the step was compiled with (freezing makes weights constants, never the caches)."""
    tokens, mask = tiny_prompt(compiled)
    expected = our_greedy_frames(eager, tokens, mask, 4)
    torch.testing.assert_close(our_greedy_frames(compiled, tokens, mask, 4), expected, rtol=0, atol=0)
    two = (tokens.expand(2, -1, -1), mask.expand(2, -1, -1))  # two rows: a new cache and a new shape
    frames = our_greedy_frames(compiled, *two, 3)
    assert torch.equal(frames[0], expected[0, :3]) and torch.equal(frames[1], expected[0, :3])
    assert decoder_is_compiled(compiled)


@needs_compiler
@pytest.mark.slow
def test_caches_set_up_again_with_as_many_rows_are_zeroed_in_place_and_cost_no_recompile(compiled):
    """The generator sets its caches up after loading: the steps compiled at load must serve them (dynamo
    guards on the caches' identity; a recompile would cost a CSM-1B user 15 to 30 s at the first request)."""
    from torch._dynamo.utils import counters

    width = compiled.config.backbone.embed_dim

    def both_steps():
        with torch.inference_mode():
            compiled.decoder_step(torch.randn(1, 2, width), torch.arange(2)[None])
            compiled.decoder_step(torch.randn(1, 1, width), torch.tensor([[2]]))

    compiled.setup_caches(1)
    both_steps()  # compiles, if another test left caches of other rows
    graphs, kv, epoch = (
        counters["stats"]["unique_graphs"],
        compiled.decoder.layers[0].attn.kv_cache,
        compiled.cache_epoch,
    )
    compiled.setup_caches(1)
    assert compiled.decoder.layers[0].attn.kv_cache is kv and not kv.k.any() and compiled.cache_epoch == epoch + 1
    both_steps()  # wrote the caches
    assert kv.k.any() and counters["stats"]["unique_graphs"] == graphs


@needs_compiler
@pytest.mark.slow
def test_two_compiled_models_each_run_their_own_weights(compiled, eager):
    """Every model's compiled step comes from one Python function, and freezing makes weights constants:
    a second model must not run the first one's."""
    other_folder = str(tiny_checkpoint_dir(seed=1))
    other = load_model(resolve_checkpoint(other_folder), device="cpu", dtype=torch.float32, compile_decoder=True)
    other_eager = load_model(resolve_checkpoint(other_folder), device="cpu", dtype=torch.float32)
    inputs = torch.randn(1, 2, other.config.backbone.embed_dim, generator=torch.Generator().manual_seed(1))
    states = []
    with torch.inference_mode():
        for model in (compiled, eager, other, other_eager):
            model.setup_caches(1)
            states.append(model.decoder_step(inputs, torch.arange(2)[None]))
    torch.testing.assert_close(states[0], states[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(states[2], states[3], atol=1e-5, rtol=1e-5)
    assert (states[0] - states[2]).abs().max() > 0.1  # the two models' weights differ, and so do their states
    assert decoder_is_compiled(other)


@pytest.mark.slow
def test_a_failed_compile_logs_once_and_leaves_the_default_model(monkeypatch, tmp_path, caplog):
    """No C++ compiler (made so on purpose): the model is the default one, with its very frames."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))  # nothing compiled before can be reused
    monkeypatch.setattr(compiling, "INDUCTOR_OPTIONS", {**compiling.INDUCTOR_OPTIONS, "cpp.cxx": ("/no/such/c++",)})
    with caplog.at_level(logging.WARNING, logger="csm"):
        model = load(torch.bfloat16, compile_decoder=True)  # bf16: not a shape compiled by another test
    [record] = [r for r in caplog.records if "Compiling the depth decoder's step failed" in r.getMessage()]
    assert "eagerly from now on" in record.getMessage()
    assert not decoder_is_compiled(model) and "decoder_step" not in model.__dict__
    assert model.decoder.attend_written_only
    default = load(torch.bfloat16)
    assert kinds(model) == kinds(default)
    tokens, mask = tiny_prompt(model)
    assert torch.equal(our_greedy_frames(model, tokens, mask, 3), our_greedy_frames(default, tokens, mask, 3))


@pytest.mark.parametrize(
    "device, dtype, quantize, said",
    [
        ("cuda", torch.bfloat16, None, "for the CPU, not cuda"),
        ("cpu", torch.float16, None, "not float16"),
        ("cpu", torch.bfloat16, "int8", "for float weights, not int8 ones"),
    ],
)
def test_compiling_is_refused_where_it_does_not_apply(device, dtype, quantize, said):
    with pytest.raises(ValueError, match=said):
        check_compile_decoder(torch.device(device), dtype, quantize)


def test_loading_refuses_compiling_int8_before_reading_a_weight():
    with pytest.raises(ValueError, match="for float weights, not int8"):
        load(quantize="int8", compile_decoder=True)


@needs_compiler
@pytest.mark.slow
def test_the_app_with_a_compiled_decoder_says_so_in_its_description_and_manifest():
    from studio.inputs import Line, Settings
    from studio.manifest import model_entry
    from studio.service import TINY_MODEL, Studio

    studio = Studio(TINY_MODEL, device="cpu", dtype=torch.float32, compile_decoder=True).load()
    assert studio.load_error is None and studio.model_key["compile_decoder"] is True
    assert studio.description.endswith(", depth decoder compiled on cpu")
    *_, result = studio.run(studio.build_job([Line(0, "Hi.")], [], [], Settings(max_seconds=0.5, seed=1)))
    assert result.error is None and result.turns[0].frames > 0
    assert model_entry(studio)["decoder"] == "compiled" and decoder_is_compiled(studio.generator.model)
