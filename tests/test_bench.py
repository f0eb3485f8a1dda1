"""The benchmark (bench/bench.py) runs end to end in its small form, with --quantize int8 and --compile-decoder,
and in its --takes mode, and reports every figure.

Timings are not tests: nothing here asserts on speed, only that the run completes, counts the
frames it was asked for, and writes every field as a positive number.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from csm.generator import FIRST_CHUNK_FRAMES
from csm.loading import default_dtype
from csm.packing import can_pack_linear

REPO = Path(__file__).resolve().parents[1]
FRAMES = 3
SIDES = ("ours", "transformers", "ours_int8", "ours_compiled")
POSITIVE_FIGURES = (
    "frames_per_second", "frames_per_second_from_median_frame", "median_frame_seconds",
    "frames_per_second_from_fastest_frame", "fastest_frame_seconds", "real_time_factor",
    "real_time_factor_with_prefill", "prefill_seconds", "time_to_first_audio_seconds",
    "time_to_first_audio_best_seconds", "peak_memory_bytes", "weights_bytes", "codec_weights_bytes",
    "kv_cache_bytes", "peak_over_weights_codec_kv", "load_seconds",
)  # fmt: skip


def run_bench(out: Path, *options: str) -> tuple[str, dict]:
    """`python -m bench.bench --small` on the CPU with `options`: what it printed, and its JSON."""
    command = [sys.executable, "-m", "bench.bench", "--small", "--device", "cpu", "--frames", str(FRAMES),
               *options, "--json", str(out)]  # fmt: skip
    # The timeout only guards against a hang; a run takes ~30 s on 2 CPU cores.
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"the benchmark failed:\n{done.stderr[-4000:]}"
    return done.stdout, json.loads(out.read_text())


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    options = ("--repeats", "1", "--quantize", "int8", "--compile-decoder")
    printed, data = run_bench(tmp_path_factory.mktemp("bench") / "bench.json", *options)
    assert "decode frames/s" in printed and "ours int8" in printed and "ours compiled" in printed  # the tables
    return data


@pytest.mark.slow
def test_report_describes_the_run(report):
    assert report["device_type"] == "cpu" and report["device"]
    assert report["date"] and report["torch_version"] and report["transformers_version"]
    assert "--small" in report["command"] and "--quantize int8" in report["command"]
    settings = report["settings"]
    assert settings["frames"] == FRAMES and settings["repeats"] == 1 and settings["small"] is True
    assert settings["dtype"] == str(default_dtype(torch.device("cpu"))).removeprefix("torch.")  # csm's default
    assert settings["batch_size"] == 1
    assert settings["prompt_frames"] == 312 and settings["quantize"] == "int8" and settings["compile_decoder"]
    for side in SIDES:
        assert report[side]["threads"] >= 1


@pytest.mark.slow
@pytest.mark.parametrize("side", SIDES)
def test_every_figure_is_positive_and_frames_are_counted(report, side):
    figures = report[side]
    for name in POSITIVE_FIGURES:
        assert figures[name] > 0, name
    parts = figures["time_to_first_audio_parts"]
    assert parts["prefill_and_first_frame_seconds"] > 0 and parts["codec_seconds"] > 0
    assert parts["later_frames_seconds"] > 0 if FIRST_CHUNK_FRAMES > 1 else parts["later_frames_seconds"] == 0
    assert sum(parts.values()) <= figures["time_to_first_audio_seconds"] * 1.001
    # Exactly the frames asked for, in every run: fps is computed from the counts actually generated.
    assert figures["frames_generated"] == [FRAMES]
    assert figures["first_audio_frames"] == [FIRST_CHUNK_FRAMES]  # the generator's first chunk, on both sides
    assert [r["frames"] for r in figures["runs"]["decode"]] == [FRAMES]
    assert [len(r["frame_seconds"]) for r in figures["runs"]["decode"]] == [FRAMES - 1]
    assert all(r["audio_samples"] == FIRST_CHUNK_FRAMES * 1920 for r in figures["runs"]["first_audio"])


@pytest.mark.slow
@pytest.mark.parametrize("side", ["ours", "ours_int8", "ours_compiled"])
def test_ours_also_reports_first_audio_with_the_context_clips_already_cached(report, side):
    ours = report[side]
    assert ours["time_to_first_audio_context_cached_seconds"] > 0
    cached = ours["runs"]["first_audio_context_cached"]
    assert [r["frames"] for r in cached] == [FIRST_CHUNK_FRAMES]
    assert all(r["audio_samples"] == FIRST_CHUNK_FRAMES * 1920 for r in cached)
    assert "time_to_first_audio_context_cached_seconds" not in report["transformers"]  # no such reuse there


def test_both_sides_run_the_same_weights_and_ratios_are_reported(report):
    ours, theirs = report["ours"], report["transformers"]
    assert ours["weights_bytes"] == theirs["weights_bytes"]
    # Our Mimi stays in fp32 whatever the model's dtype; transformers casts it with the model.
    fp32_over_theirs = 1 if report["settings"]["dtype"] == "float32" else 2
    assert ours["codec_weights_bytes"] == fp32_over_theirs * theirs["codec_weights_bytes"]
    ratios = {
        "frames_per_second",
        "frames_per_second_from_median_frame",
        "frames_per_second_from_fastest_frame",
        "time_to_first_audio",
        "time_to_first_audio_best",
        "peak_memory",
    }
    before = {"time_to_first_audio_against_transformers_frames_before"} if FIRST_CHUNK_FRAMES != 2 else set()
    compiled = {f"compiled_over_{peer}_{name}" for peer in ("ours", "transformers") for name in ratios}
    assert set(report["ratios"]) == ratios | {f"int8_over_ours_{name}" for name in ratios} | compiled | before
    assert report["ratios"]["frames_per_second"] == pytest.approx(
        ours["frames_per_second"] / theirs["frames_per_second"]
    )
    assert report["ratios"]["int8_over_ours_frames_per_second"] == pytest.approx(
        report["ours_int8"]["frames_per_second"] / ours["frames_per_second"]
    )
    assert report["ratios"]["int8_over_ours_peak_memory"] == pytest.approx(
        report["ours_int8"]["peak_memory_bytes"] / ours["peak_memory_bytes"]
    )
    assert report["ratios"]["compiled_over_transformers_frames_per_second_from_median_frame"] == pytest.approx(
        report["ours_compiled"]["frames_per_second_from_median_frame"] / theirs["frames_per_second_from_median_frame"]
    )
    assert all(v > 0 for v in report["ratios"].values())


def test_the_compiled_side_says_whether_it_compiled_and_runs_the_same_weights(report):
    from tests.test_compiling import has_cpp_compiler

    compiled, ours = report["ours_compiled"], report["ours"]
    why = "compiling fell back to eager: the warning says why (csm.compiling logs it when the tiny model loads)"
    assert compiled["compiled_decoder"] is has_cpp_compiler(), why
    assert ours["memory"]["compiled_decoder"] is False
    assert compiled["weights_bytes"] == ours["weights_bytes"]  # plain or packed: the same bytes of weights


def test_int8_weights_are_smaller_and_its_accuracy_is_reported(report):
    int8, ours = report["ours_int8"], report["ours"]
    assert int8["weights_bytes"] < ours["weights_bytes"]
    assert int8["codec_weights_bytes"] < ours["codec_weights_bytes"]  # Mimi's transformers are int8 too
    accuracy = report["accuracy"]
    assert accuracy["frames"] == 50 and accuracy["quantize"] == "int8"
    assert accuracy["dtype"] == report["settings"]["dtype"]
    assert len(accuracy["layer_snr_db"]) == 2 + 2  # every block of the small shapes' two stacks
    assert all(snr > 20 for snr in accuracy["layer_snr_db"].values())
    assert 0 < accuracy["codebook0_logit_error_mean"] <= accuracy["codebook0_logit_error_max"]
    assert 0 <= accuracy["free_running_code_agreement"] <= 1
    assert 0.5 < accuracy["teacher_forced_code_agreement"] <= 1
    assert 20 < accuracy["codec_decoder_transformer_added_snr_db"] < accuracy["codec_decode_snr_db"] < float("inf")
    assert 0.5 < accuracy["codec_encode_code_agreement"] <= 1


@pytest.fixture(scope="module")
def takes_report(tmp_path_factory) -> dict:
    printed, data = run_bench(tmp_path_factory.mktemp("bench-takes") / "takes.json", "--repeats", "2", "--takes", "4")
    assert "4 takes in one pass against 1 take" in printed
    return data


def test_takes_mode_times_four_takes_against_one_in_the_same_run(takes_report):
    settings, takes = takes_report["settings"], takes_report["takes"]
    assert settings["takes"] == 4 and settings["frames"] == FRAMES and settings["repeats"] == 2
    assert set(takes) == {"1", "4"} and "transformers" not in takes_report
    for count in (1, 4):
        figures = takes[str(count)]
        # Every run made every take's frames and its audio: the whole pass was timed, Mimi included.
        assert figures["frames"] == [[FRAMES] * count] * 2
        assert figures["audio_samples"] == [[FRAMES * 1920] * count] * 2
        assert 0 < figures["first_audio_seconds"] < figures["seconds"]
        assert 0 < figures["best_seconds"] <= figures["seconds"]
    ratios = takes_report["ratios"]
    assert ratios["takes4_over_1_time"] == pytest.approx(takes["4"]["seconds"] / takes["1"]["seconds"])
    assert ratios["takes4_over_1_time_after_first_audio"] == pytest.approx(
        takes["4"]["after_first_audio_seconds"] / takes["1"]["after_first_audio_seconds"]
    )
    assert set(ratios) == {f"takes4_over_1_{name}" for name in ("time", "time_best", "time_after_first_audio",
                                                                 "first_audio")}  # fmt: skip
    assert takes_report["peak_memory_bytes"] > 0 and takes_report["threads"] >= 1


@pytest.mark.slow
def test_transformers_first_audio_is_also_measured_as_in_earlier_runs(report):
    """With a one-frame first chunk, transformers' first audio is measured at that and at the 2 frames of earlier runs."""
    if FIRST_CHUNK_FRAMES == 2:
        pytest.skip("the first chunk is 2 frames: the two measures are one")
    theirs = report["transformers"]
    runs = theirs["runs"]["first_audio_frames_before"]
    assert [r["frames"] for r in runs] == [2] and all(r["audio_samples"] == 2 * 1920 for r in runs)
    assert theirs["time_to_first_audio_frames_before_seconds"] == runs[0]["seconds"]
    assert report["ratios"]["time_to_first_audio_against_transformers_frames_before"] == pytest.approx(
        report["ours"]["time_to_first_audio_seconds"] / runs[0]["seconds"]
    )
    assert "first_audio_frames_before" not in report["ours"]["runs"]


@pytest.mark.skipif(not can_pack_linear(torch.float32), reason="the heads are modules (hooked) only when packed")
def test_the_frame_profile_runs_and_accounts_for_every_weight_a_frame_reads(tmp_path, capsys):
    """`python -m bench.profile_frame --small`: the decoder runs once per codebook after the first, and the
    products' row counts each weight product of the frame (the backbone's once, the decoder's 31 times)."""
    from bench import profile_frame
    from bench.bench import weight_bytes
    from csm.loading import load_model, resolve_checkpoint

    figures = profile_frame.main(["--small", "--frames", "3", "--checkpoint-dir", str(tmp_path / "ckpt")])
    printed = capsys.readouterr().out
    for row in ("decoder (31 steps)", "every weight product (Linears, heads)", "a plain read (sum)"):
        assert row in printed
    model = load_model(resolve_checkpoint(str(tmp_path / "ckpt")), device="cpu", dtype=torch.float32)
    steps = model.num_codebooks - 1
    assert figures["part_bytes"]["backbone"] == weight_bytes(model.backbone)
    assert figures["part_bytes"]["decoder"] == steps * weight_bytes(model.decoder)

    def products(stack) -> int:  # a stack's weights less its norms' (a norm is not a product)
        return weight_bytes(stack) - sum(p.nbytes for name, p in stack.named_parameters() if "norm" in name)

    heads = weight_bytes(model.audio_head) + weight_bytes(model.codebook0_head) + steps * weight_bytes(model.projection)
    assert figures["part_bytes"]["products"] == products(model.backbone) + steps * products(model.decoder) + heads
    assert 0 < figures["parts"]["products"] < figures["hooked_frame_seconds"]
    assert figures["read_gb_per_second"] > 0
