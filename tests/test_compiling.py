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
from csm.generator import load_csm_1b
from csm.inputs import MAX_TAKES
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


GRAPHS = {}  # dynamo's count of compiled graphs (all models) once the compiled fixture has loaded


@pytest.fixture(scope="module")
def compiled():
    if not has_cpp_compiler():
        pytest.skip("no C++ compiler for inductor on this machine")
    from torch._dynamo.utils import counters

    # Through the generator's cache, so that the app test below finds this model instead of compiling another.
    model = load_csm_1b(
        repo_id=str(tiny_checkpoint_dir()), device="cpu", dtype=torch.float32, compile_decoder=True
    ).model
    GRAPHS["after loading"] = counters["stats"]["unique_graphs"]
    return model


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
def test_a_compiled_model_is_the_default_one_with_a_compiled_twin_of_its_decoder(compiled, eager):
    assert decoder_is_compiled(compiled) and "decoder_step" not in eager.__dict__
    assert kinds(compiled) == kinds(eager)  # the model's own modules: packed as by default
    twin = compiled.decoder_step.twin
    assert twin.decoder is not compiled.decoder and not twin.decoder.attend_written_only
    assert isinstance(twin.projection, torch.nn.Linear) and twin.decoder.layers[0].attn.kv_cache.k.shape[0] == 1
    plain = load(pack_weights=False)  # the twin holds the checkpoint's decoder weights, plain
    assert all(torch.equal(twin.decoder.state_dict()[k], v) for k, v in plain.decoder.state_dict().items())
    assert torch.equal(twin.projection.weight, plain.projection.weight)
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
    """Greedy frames hide fp32's last-bit differences here (not on CSM-1B's shapes in bf16: bench/RESULTS.md).
    Two rows, as for two takes, run the model's eager step on its own caches, made anew: the same frames."""
    tokens, mask = tiny_prompt(compiled)
    expected = our_greedy_frames(eager, tokens, mask, 4)
    torch.testing.assert_close(our_greedy_frames(compiled, tokens, mask, 4), expected, rtol=0, atol=0)
    two = (tokens.expand(2, -1, -1), mask.expand(2, -1, -1))  # two rows: a new cache and a new shape
    frames = our_greedy_frames(compiled, *two, 3)
    assert torch.equal(frames[0], expected[0, :3]) and torch.equal(frames[1], expected[0, :3])
    assert decoder_is_compiled(compiled)


@needs_compiler
@pytest.mark.slow
def test_the_models_caches_made_anew_for_several_takes_cost_the_compiled_step_no_recompile(compiled):
    """The twin keeps its own caches, so its one compiled shape serves one take whatever the model's caches
    are (a recompile would cost a CSM-1B user half a minute at the next request)."""
    from torch._dynamo.utils import counters

    compiled.setup_caches(MAX_TAKES)  # as the generator does for the first request with several takes
    tokens, mask = tiny_prompt(compiled)
    our_greedy_frames(compiled, tokens, mask, 2)  # one take: compiled steps, a frame's first one sliced in two
    assert decoder_is_compiled(compiled)
    assert counters["stats"]["unique_graphs"] == GRAPHS["after loading"]  # the one made at load serves them all


@needs_compiler
@pytest.mark.slow
def test_two_compiled_models_each_run_their_own_weights_and_a_failure_midframe_goes_on_eagerly(compiled, eager):
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

    # And if the compiled step fails in the middle of a frame, the eager one goes on from its caches.
    step, calls = other.decoder_step, []

    def failing_on_the_fifth_call(*args):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("broken on purpose")
        return compiled_twin(*args)

    compiled_twin, step.compiled = step.compiled, failing_on_the_fifth_call
    tokens, mask = tiny_prompt(other)
    frames = our_greedy_frames(other, tokens, mask, 3)
    assert len(calls) == 5 and not decoder_is_compiled(other) and "decoder_step" not in other.__dict__
    assert torch.equal(frames, our_greedy_frames(other_eager, tokens, mask, 3))


@pytest.mark.slow
def test_a_failed_compile_logs_once_and_leaves_the_default_model(monkeypatch, tmp_path, caplog):
    """No C++ compiler (made so on purpose): the model is the default one, with its very frames."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))  # nothing compiled before can be reused
    monkeypatch.setattr(compiling, "INDUCTOR_OPTIONS", {**compiling.INDUCTOR_OPTIONS, "cpp.cxx": ("/no/such/c++",)})
    with caplog.at_level(logging.WARNING, logger="csm"):
        model = load(torch.bfloat16, compile_decoder=True)  # bf16: not a shape compiled by another test
    [record] = [r for r in caplog.records if "compiled depth-decoder step failed" in r.getMessage()]
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
def test_the_app_with_a_compiled_decoder_says_so_in_its_description_and_manifest(compiled, caplog):
    from studio.inputs import Line, Settings
    from studio.manifest import model_entry
    from studio.service import TINY_MODEL, Studio

    with caplog.at_level(logging.WARNING, logger="csm"):
        studio = Studio(TINY_MODEL, device="cpu", dtype=torch.float32, compile_decoder=True).load()
    assert studio.load_error is None and studio.model_key["compile_decoder"] is True
    assert studio.generator.model is compiled  # the generator cache's (a second compile would cost CI 15 s)
    assert studio.description.endswith(", depth decoder compiled for one take on cpu"), (
        caplog.text
    )  # why it fell back, if it did
    *_, result = studio.run(studio.build_job([Line(0, "Hi.")], [], [], Settings(max_seconds=0.5, seed=1)))
    assert result.error is None and result.turns[0].frames > 0
    assert model_entry(studio)["decoder"] == "compiled" and decoder_is_compiled(studio.generator.model)
    assert model_entry(studio, takes=2)["decoder"] == "eager"  # several takes run the eager step
