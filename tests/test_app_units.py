"""The app's parts without a server: presets, parsing, checks, context fitting, GPU time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from csm.generator import Segment
from studio import cli, clips, inputs, jobs, outputs
from studio.errors import InputError
from studio.inputs import Line, Settings
from studio.presets import PresetLibrary
from studio.service import TINY_MODEL, Studio

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = json.loads((ROOT / "examples" / "presets.json").read_text())


# -- shipped presets --------------------------------------------------------------------------


@pytest.mark.parametrize("preset", MANIFEST["presets"], ids=[p["id"] for p in MANIFEST["presets"]])
def test_shipped_preset_clips_are_short_24khz_mono_16bit_wavs(preset):
    path = ROOT / "examples" / preset["file"]
    info = sf.info(path)
    assert (info.format, info.subtype, info.samplerate, info.channels) == ("WAV", "PCM_16", 24_000, 1)
    assert 2 <= info.duration <= 5
    assert path.stat().st_size < 300_000
    assert preset["transcript"].strip() and preset["name"]
    audio, _ = sf.read(path)
    assert np.abs(audio).max() > 0.1  # a voice, not silence


def test_presets_have_distinct_voices_and_say_they_are_synthetic():
    voices = {p["espeak"]["voice"] for p in MANIFEST["presets"]}
    assert len(MANIFEST["presets"]) >= 3 and len(voices) >= 2
    assert "SYNTHETIC STAND-INS" in MANIFEST["about"]
    library = PresetLibrary()
    assert [p.id for p in library.all()] == [p["id"] for p in MANIFEST["presets"]]  # nothing fetched yet
    official = ["conversational_a", "conversational_b", *(f"read_speech_{x}" for x in "abcd")]
    assert [p["file"] for p in MANIFEST["hub_prompts"]] == [f"prompts/{name}.wav" for name in official]
    assert all(len(p["transcript"].split()) >= 15 for p in MANIFEST["hub_prompts"])


def test_all_six_official_prompts_are_offered_first_when_the_hub_has_them(monkeypatch, tmp_path):
    """The Hub is faked with one clip per file name (at 44.1 kHz stereo, to be made 24 kHz mono); one
    missing file leaves the other five offered."""
    import huggingface_hub

    fetched = []

    def fake_download(repo_id, filename, **kwargs):
        if filename.endswith("read_speech_d.wav") and "missing" in fetched:
            raise huggingface_hub.errors.EntryNotFoundError("gone")
        fetched.append(filename)
        path = tmp_path / filename.replace("/", "_")
        sf.write(path, np.full((44_100, 2), 0.1 * (len(fetched)), np.float32), 44_100)
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    library = PresetLibrary()
    library.fetch_hub_prompts().join(timeout=30)
    offered = library.all()
    assert [p.id for p in offered[:6]] == [spec["id"] for spec in MANIFEST["hub_prompts"]]
    assert [p.transcript for p in offered[:6]] == [spec["transcript"] for spec in MANIFEST["hub_prompts"]]
    assert all(p.official for p in offered[:6]) and not any(p.official for p in offered[6:])
    info = sf.info(offered[5].path)
    assert (info.samplerate, info.channels) == (24_000, 1) and abs(info.duration - 1.0) < 0.01
    assert library.audio(offered[5]).abs().median() == pytest.approx(0.6, abs=0.01)  # the sixth file's level

    fetched[:] = ["missing"]
    library = PresetLibrary()
    library.fetch_hub_prompts().join(timeout=30)
    assert [p.id for p in library.all() if p.official] == [spec["id"] for spec in MANIFEST["hub_prompts"][:5]]


def test_the_hub_prompts_are_not_waited_for_and_offline_leaves_the_shipped_voices(monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError("offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    library = PresetLibrary()
    library.fetch_hub_prompts().join(timeout=10)
    assert all(not p.official for p in library.all()) and len(library.all()) == len(MANIFEST["presets"])


# -- parsing and checks ------------------------------------------------------------------------


def test_a_script_is_one_turn_per_tagged_line():
    lines = inputs.parse_script("[0] Hello there\n\n  [ 1 ]  Hi!  How are   you?\n[0]Fine.\n")
    assert lines == [Line(0, "Hello there"), Line(1, "Hi! How are you?"), Line(0, "Fine.")]


@pytest.mark.parametrize(
    "script, message",
    [
        ("[0] Hello\nno tag here", "Script line 2 has no speaker tag"),
        ("Speaker 0: Hello", "Script line 1 has no speaker tag"),
        ("[1]", "Script line 1 is empty"),
        ("[12] Hello", "Script line 1: the speaker must be a whole number from 0 to 9"),
        ("", "The script is empty"),
        ("[0] hi\n" * 30, "at most 24 are generated at once"),
        ("[0] " + "word " * 500, "Script line 1 is 2,499 characters long"),
    ],
)
def test_script_mistakes_are_named_with_their_line(script, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[")):
        inputs.parse_script(script)


def test_settings_take_strings_and_numbers_and_minus_one_means_a_random_seed():
    settings = Settings.parse("0.7", 20.0, 5, -1)
    assert settings == Settings(0.7, 20, 5.0, None)
    assert Settings.parse(0.9, 50, 10, "").seed is None
    assert Settings.parse(0.9, 50, 10, 42).seed == 42


@pytest.mark.parametrize(
    "arguments, message",
    [
        ((0, 50, 10, -1), "Temperature must be above 0"),
        ((float("nan"), 50, 10, -1), "Temperature must be a finite number"),
        ((0.9, 0, 10, -1), "Top-k must be a whole number of at least 1"),
        ((0.9, 2.5, 10, -1), "Top-k must be a whole number"),
        ((0.9, 50, 0, -1), "Max length per turn must be between"),
        ((0.9, 50, "ten", -1), "Max length must be a number"),
        ((0.9, 50, 10, -7), "Seed must be a whole number"),
        ((0.9, 50, 10, 1.5), "Seed must be a whole number"),
    ],
)
def test_bad_settings_are_explained(arguments, message):
    with pytest.raises(InputError, match=message):
        Settings.parse(*arguments)


def write(tmp_path, name, audio, rate=24_000) -> str:
    path = tmp_path / name
    sf.write(path, audio, rate)
    return str(path)


def test_a_clip_of_any_rate_and_channels_becomes_24khz_mono(tmp_path):
    stereo = 0.2 * np.random.default_rng(0).standard_normal((44_100 * 2, 2)).astype(np.float32)
    segment = clips.load_clip(write(tmp_path, "stereo.wav", stereo, 44_100), "  some   words ", 1, "context turn 1")
    assert (segment.speaker, segment.text) == (1, "some words")
    assert segment.audio.dim() == 1 and abs(len(segment.audio) - 48_000) <= 1


@pytest.mark.parametrize(
    "make, transcript, message",
    [
        (lambda d: write(d, "silent.wav", np.zeros(48_000, np.float32)), "words", "is silent"),
        (lambda d: write(d, "quiet.wav", np.full(48_000, 1e-5, np.float32)), "words", "is silent"),
        (
            lambda d: write(d, "short.wav", 0.1 * np.ones(2_400, np.float32)),
            "words",
            r"\(short.wav\) is only 0.10 s long",
        ),
        (lambda d: write(d, "ok.wav", 0.1 * np.ones(48_000, np.float32)), "  ", "has no transcript"),
        (lambda d: None, "words", "has no audio"),
        (lambda d: str(d / "gone.wav"), "words", "is no longer on the server"),
        (
            lambda d: (d / "bad.wav").write_bytes(b"not audio at all") and str(d / "bad.wav"),
            "words",
            "cannot be read as audio",
        ),
        (lambda d: (d / "empty.wav").write_bytes(b"") or str(d / "empty.wav"), "words", "cannot be read as audio"),
    ],
    ids=["silent", "near-silent", "too short", "no transcript", "no file", "expired upload", "corrupt", "empty file"],
)
def test_bad_clips_are_explained(tmp_path, make, transcript, message):
    with pytest.raises(InputError, match=message):
        clips.load_clip(make(tmp_path), transcript, 0, "context turn 1")


# -- output and GPU time --------------------------------------------------------------------------


def test_a_conversation_is_its_turns_with_a_pause_between():
    turns = [np.ones(100, np.float32), 2 * np.ones(50, np.float32), 3 * np.ones(10, np.float32)]
    stitched = outputs.stitch(turns)
    gap = int(inputs.TURN_GAP_S * inputs.SAMPLE_RATE)
    assert len(stitched) == 160 + 2 * gap
    assert (stitched[100 : 100 + gap] == 0).all() and (stitched[100 + gap : 150 + gap] == 2).all()


def test_gpu_time_follows_the_requested_length_within_bounds():
    def job(lines, max_seconds):
        return jobs.Job({}, [Line(0, "hi")] * lines, [], Settings(max_seconds=max_seconds), seed=0)

    assert jobs.gpu_seconds(job(1, 5)) < jobs.gpu_seconds(job(1, 20)) < jobs.gpu_seconds(job(3, 20))
    assert jobs.gpu_seconds(job(24, 60)) == jobs.GPU_MAX_S


def test_command_line_defaults_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("CSM_STUDIO_MODEL", "tiny")
    monkeypatch.setenv("CSM_STUDIO_QUEUE_SIZE", "3")
    args = cli.parse_args([])
    assert (args.model, args.queue_size) == ("tiny", 3)
    assert cli.parse_args(["--model", "./some/folder"]).model == "./some/folder"
    assert cli.parse_args([]).dtype == "auto" and cli.DTYPES["auto"] is None
    monkeypatch.setenv("CSM_STUDIO_DTYPE", "bfloat16")
    assert cli.DTYPES[cli.parse_args([]).dtype] is torch.bfloat16
    with pytest.raises(SystemExit):
        cli.parse_args(["--dtype", "float64"])


@pytest.mark.parametrize("variable, value, option", [("CSM_STUDIO_DTYPE", "fp16", "--dtype"),
                                                     ("CSM_STUDIO_QUANTIZE", "int9", "--quantize")])  # fmt: skip
def test_a_bad_choice_from_the_environment_is_a_usage_error(monkeypatch, capsys, variable, value, option):
    """argparse leaves defaults unchecked: CSM_STUDIO_DTYPE=fp16 was a KeyError traceback at load."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as refused:
        cli.parse_args(["--model", "tiny"])
    message = capsys.readouterr().err
    assert refused.value.code == 2 and f"argument {option}: invalid choice {value!r} from its environment" in message


def test_the_chosen_precision_reaches_the_loaded_model():
    from csm.loading import default_dtype

    studio = Studio(TINY_MODEL, device="cpu", dtype=torch.bfloat16).load()
    assert studio.load_error is None
    assert studio.generator.model.dtype is torch.bfloat16
    assert studio.model_key["dtype"] is torch.bfloat16  # each job looks the generator up by this key
    assert Studio(TINY_MODEL, device="cpu").load().generator.model.dtype is default_dtype(torch.device("cpu"))


# -- the context window (the tiny model has the real 2048-frame window) -----------------------------


@pytest.fixture(scope="module")
def tiny_generator():
    from csm.generator import load_csm_1b
    from csm.tiny import tiny_checkpoint_dir

    return load_csm_1b(repo_id=str(tiny_checkpoint_dir()), device="cpu")


def clip(seconds: float, label: str, is_prompt=False, speaker=0) -> jobs.ContextClip:
    audio = 0.1 * torch.ones(int(seconds * inputs.SAMPLE_RATE))
    return jobs.ContextClip(Segment(speaker, "Some words.", audio), label, is_prompt)


@pytest.mark.slow
def test_a_full_window_drops_the_oldest_turns_and_keeps_the_voices(tiny_generator):
    """The job pins the speaker prompts: the generator leaves out the oldest turn, not the first voice."""
    studio = Studio(TINY_MODEL, device="cpu").load()
    assert studio.generator is tiny_generator  # the same cached generator
    context = [clip(5, "voice 0", True), clip(5, "voice 1", True, speaker=1)]
    context += [clip(20, f"turn {i}") for i in range(1, 9)]  # 10 + 160 s: more than the 164 s window holds
    job = jobs.Job(studio.model_key, [Line(1, "Hello.")], context, Settings(max_seconds=0.16), seed=1)
    *_, done = jobs.generate_lines(job)
    assert done.report.dropped_context == ["turn 1"]


@pytest.mark.slow
def test_a_clip_too_long_for_the_window_is_refused_before_generating(tiny_generator):
    studio = Studio(TINY_MODEL)
    studio.generator = tiny_generator
    with pytest.raises(InputError, match="too long for the model's context"):
        studio.build_job([Line(0, "Hi")], [], [clip(170, "context turn 1")], Settings(max_seconds=10))
    job = studio.build_job([Line(0, "Hi")], [], [clip(140, "context turn 1")], Settings(max_seconds=10, seed=3))
    assert job.seed == 3


def test_int8_weights_are_one_option_away(monkeypatch):
    from csm.quantize import Int8Linear

    assert cli.parse_args([]).quantize == "none"
    monkeypatch.setenv("CSM_STUDIO_QUANTIZE", "int8")
    assert cli.parse_args([]).quantize == "int8"
    with pytest.raises(SystemExit):
        cli.parse_args(["--quantize", "int4"])
    studio = Studio(TINY_MODEL, device="cpu", quantize="int8").load()
    assert studio.load_error is None and studio.model_key["quantize"] == "int8"
    assert any(isinstance(m, Int8Linear) for m in studio.generator.model.modules())
    job = studio.build_job([Line(0, "Hi.")], [], [], Settings(max_seconds=0.5, seed=1))
    *_, result = studio.run(job)
    assert result.turns[0].frames > 0


def test_compiling_the_decoder_is_one_option_away_and_refused_where_it_does_not_apply(monkeypatch, capsys):
    assert cli.parse_args([]).compile_decoder is False
    assert cli.parse_args(["--compile-decoder", "--device", "cpu"]).compile_decoder is True
    monkeypatch.setenv("CSM_STUDIO_COMPILE_DECODER", "1")
    args = cli.parse_args(["--model", "tiny", "--device", "cpu"])
    monkeypatch.setattr(Studio, "load", lambda self: self)  # what start_studio hands over, not a load
    assert args.compile_decoder is True and cli.start_studio(args).compile_decoder is True
    for bad, said in (
        (["--quantize", "int8"], "for float weights, not int8 ones"),
        (["--dtype", "float16"], "not float16"),
    ):
        with pytest.raises(SystemExit) as refused:
            cli.parse_args(["--device", "cpu", *bad])
        message = capsys.readouterr().err
        assert (
            refused.value.code == 2
            and "--compile-decoder (or CSM_STUDIO_COMPILE_DECODER): compiling the decoder step is" in message
            and said in message
        )


def test_a_run_whose_takes_are_blind_streams_nothing_into_the_live_player():
    """Streamed, the live player plays take A as it comes, which would tell it from the other takes."""
    from types import SimpleNamespace

    from studio.ui.events import Page
    from studio.ui.style import STREAMING

    chunks = [jobs.Chunk(0, np.full(1920, 0.1, np.float32)), jobs.Chunk(0, np.full(1920, 0.2, np.float32))]
    page = SimpleNamespace(result=SimpleNamespace(live="live player", status="status line"),
                           studio=SimpleNamespace(run=lambda job, stop: iter(chunks)))  # fmt: skip
    job = SimpleNamespace(lines=[Line(0, "Hello.")])

    def updates(live: bool) -> list[dict]:
        return list(Page.stream(page, job, None, lambda result: {}, live))

    assert not any("live player" in update for update in updates(live=False))
    if STREAMING:  # where gradio can stream (ffmpeg), the same run not blind fills the live player
        assert [list(update) for update in updates(live=True)] == [["live player"], ["live player"]]


def test_while_a_redo_runs_keep_and_rate_are_refused_not_lost():
    """A redo's result is made from the turns as they were at its click: a Keep or rating made meanwhile would be undone."""
    from types import SimpleNamespace

    from studio.ui.takes_events import TakeEvents

    written = []
    page = SimpleNamespace(redoing={"busy session"}, kept_outputs=["state", "audio", "keep", "row", "turn"],
                           ratings=SimpleNamespace(add=lambda *a: written.append(a)), BUSY=TakeEvents.BUSY)  # fmt: skip
    last = {"turns": []}  # never read while busy: nothing is changed
    with pytest.warns(UserWarning, match="A redo is running"):
        kept = TakeEvents.kept_take(page, last, 0, 1, session="busy session")
    assert len(kept) == 5 and all(update == {"__type__": "update"} for update in kept)
    with pytest.warns(UserWarning, match="keep or rate a take once it has finished"):
        assert TakeEvents.rated(page, last, 0, 1, "good", "fine", session="busy session") == {"__type__": "update"}
    assert written == []  # not in the ratings table either
    with pytest.raises((IndexError, KeyError)):  # another session's click goes through (and reads the turns)
        TakeEvents.rated(page, last, 0, 1, "good", "fine", session="another session")


def test_generate_is_usable_again_after_a_run_that_fails_as_after_one_that_ends():
    """The button is busy from the click on; gradio's frontend follows a failed event (a full queue) with its
    `.failure` listeners only, so both kinds of follower must give the button back."""
    from studio.ui import build_app
    from studio.ui.compose import GENERATE

    app = build_app(Studio(TINY_MODEL, device="cpu"))
    fns = list(app.fns.values())
    button = next(block for block in app.blocks.values() if getattr(block, "elem_id", None) == "generate")
    runs = [f for f in fns if getattr(f.fn, "__name__", "") == "generate" and f.api_visibility == "private"]
    assert len(runs) == 1
    clicked = next(f for f in fns if f._id == runs[0].trigger_after)
    assert button in clicked.outputs  # the click itself makes it busy
    followers = [f for f in fns if f.trigger_after == runs[0]._id and button in f.outputs]
    assert sorted(f.trigger_only_on_failure for f in followers) == [False, True]
    for follower in followers:
        assert follower.fn() == {"__type__": "update", "value": GENERATE, "interactive": True}
