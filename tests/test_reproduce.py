"""Share and reproduce (studio/sessions.py, studio/reproduce.py, /reproduce): a run saved as a bundle, opened
with every field back, and generated again bit for bit on the tiny model; a changed bundle reports the turns
it changes; hostile bundles are refused through the API."""

from __future__ import annotations

import json
import threading
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from csm.generator import FIRST_CHUNK_FRAMES
from csm.quantize import INT8_SCHEME
from studio.errors import InputError
from studio.inputs import parse_script
from studio.jobs import Chunk, TurnReport
from studio.report import Result
from studio.reproduce import reproduce
from studio.service import TINY_MODEL, Studio, Voice
from studio.sessions import LEGACY_FIRST_CHUNK_FRAMES, open_session, session_bundle, session_draft, with_extra
from studio.ui.share import page_state_of
from studio.watermark import load_watermarker

RATE = 24_000
SCRIPT = "[0] Hello there, did you water the garden?\n[1]   Of course I did.\n[0] Then why is it so dry?"
CHANGED = "No, I completely forgot about it, sorry: the hose was broken and the shop was shut all week."
SETTINGS = (0.9, 50, 1, 42)  # 1 s turns keep the tiny model quick; seed 42: turns 42, 43, 44


def noise(seconds: float, seed: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * RATE))).astype(np.float32)


@pytest.fixture(scope="module")
def studio() -> Studio:
    return Studio(TINY_MODEL, device="cpu").load()


@pytest.fixture(scope="module")
def run(studio, tmp_path_factory):
    """A 3-turn script: speaker 0 a preset, speaker 1 an own clip (at 16 kHz: resampled on reading), one
    earlier turn; seed 42."""
    folder = tmp_path_factory.mktemp("clips")
    own, earlier = folder / "own.wav", folder / "earlier.wav"
    sf.write(own, noise(1.0, 1), 16_000)  # 24,000 samples: 1.5 s
    sf.write(earlier, noise(0.8, 2), RATE)
    voices = [Voice(0, "river"), Voice(1, path=str(own), transcript="My own   voice.")]
    job = studio.prepare(parse_script(SCRIPT), voices, ([str(earlier)], ["Earlier words."], [1]), SETTINGS)
    *_, result = studio.run(job)
    assert len(result.turn_paths) == 3 and result.error is None and not result.stopped
    return job, result


EXTRA = {
    "script_text": SCRIPT,
    "ratings": [None, {"verdict": "bad", "note": "too fast"}],
    "page": {"cards": [{"speaker": 0, "kind": "preset", "preset": "river"}, {"speaker": 2, "kind": "none"}]},
}


@pytest.fixture(scope="module")
def bundle(studio, run) -> Path:
    return session_bundle(studio, *run, extra=EXTRA)


def pcm(path) -> np.ndarray:
    return sf.read(path, dtype="int16")[0]


def rezipped(path: Path, out: Path, change) -> Path:
    """The bundle with its manifest.json changed by `change(manifest)`, every file kept."""
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "manifest.json":
                manifest = json.loads(data)
                change(manifest)
                data = json.dumps(manifest).encode()
            target.writestr(info.filename, data)
    return out


# -- Open session ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_opened_session_gives_back_every_field_the_page_restores(studio, run, bundle):
    job, result = run
    session = open_session(bundle)
    river = studio.presets.get("river")
    first = session.voices[0]
    assert (first.speaker, first.preset, first.name, first.path) == (0, "river", river.name, None)
    own = session.voices[1]
    assert (own.speaker, own.preset, own.transcript) == (1, None, "My own voice.")
    heard = next(c.segment for c in job.context if c.is_prompt and c.segment.speaker == 1)
    np.testing.assert_array_equal(sf.read(own.path, dtype="float32")[0], heard.audio.numpy())  # as the model heard it
    [earlier] = session.context
    assert (earlier.speaker, earlier.text, Path(earlier.path).is_file()) == (1, "Earlier words.", True)
    assert session.script == [{"speaker": line.speaker, "text": line.text} for line in job.lines]
    assert session.script[1]["text"] == "Of course I did." and session.script_text == SCRIPT  # typed, spaces and all
    assert session.settings == {"temperature": 0.9, "topk": 50, "max_seconds": 1, "seed": 42, "takes": 1,
                                "first_chunk_frames": FIRST_CHUNK_FRAMES}  # fmt: skip
    assert [(t.index, t.speaker, t.seed) for t in session.turns] == [(0, 0, 42), (1, 1, 43), (2, 0, 44)]
    assert [t.text for t in session.turns] == [line.text for line in job.lines]
    for turn, path, report in zip(session.turns, result.turn_paths, result.turns):
        assert Path(turn.path).read_bytes() == path.read_bytes() and Path(turn.path).is_relative_to(session.folder)
        assert [(t.seed, t.path, t.kept, t.rating) for t in turn.takes] == [(turn.seed, turn.path, True, None)]
        assert turn.report["frames"] == report.frames and turn.report["seconds"] == report.seconds
        assert turn.voice == report.voice and turn.partial is False
    assert [t.rating for t in session.turns] == [None, {"verdict": "bad", "note": "too fast"}, None]
    assert session.page == EXTRA["page"]
    assert session.timings["seconds"] == round(result.seconds, 3) and session.timings["elapsed_s"] > 0
    assert session.status == {"stopped": False, "error": None, "warnings": result.warnings}
    assert (session.model["id"], session.model["device"], session.model["watermark"]["on"]) == ("tiny", "cpu", True)


@pytest.mark.slow
def test_a_session_without_the_pages_additions_rebuilds_its_script_text(studio, run):
    session = open_session(session_bundle(studio, *run))
    assert (
        session.script_text
        == "[0] Hello there, did you water the garden?\n[1] Of course I did.\n[0] Then why is it so dry?"
    )
    assert session.page == {} and all(t.rating is None for t in session.turns)


@pytest.mark.slow
def test_takes_from_the_page_are_saved_with_their_files_and_which_was_kept(studio, run, tmp_path):
    job, result = run
    draft = session_draft(studio, job, result)
    other = result.turn_paths[0].parent / "take-b.wav"  # a second take of turn 2, in the app's own output folder
    sf.write(other, noise(0.5, 3), RATE, subtype="PCM_16")
    takes = [None, [{"path": str(result.turn_paths[1]), "seed": 43, "kept": False},
                    {"path": str(other), "seed": 99, "kept": True, "rating": {"verdict": "good", "note": ""},
                     "ended_by_model": False}]]  # fmt: skip
    session = open_session(session_bundle(studio, job, result, {"takes": takes}))
    turn = session.turns[1]
    assert [(t.seed, t.kept, t.rating) for t in turn.takes] == [(43, False, None), (99, True, {"verdict": "good",
                                                                                               "note": ""})]  # fmt: skip
    assert Path(turn.path).read_bytes() == other.read_bytes()  # the kept take is the turn's audio
    assert Path(turn.takes[0].path).read_bytes() == result.turn_paths[1].read_bytes()
    assert session.manifest["turns"][1]["takes"][0]["report"]["frames"] == result.turns[1].frames  # the run's
    # A take the run did not make (a redo's): the page says how it ended, and that is all its report holds.
    assert turn.takes[1].ended_by_model is False and turn.report == {"ended_by_model": False}
    outside = tmp_path / "secret.wav"
    sf.write(outside, noise(0.5, 4), RATE)
    with pytest.raises(InputError, match="Take 1 of turn 1 is not an audio file this app made"):
        with_extra(draft.manifest, draft.files, {"takes": [[{"path": str(outside), "seed": 1, "kept": True}]]})
    with pytest.raises(InputError, match="Turn 2 has more than one kept take"):
        with_extra(draft.manifest, draft.files, {"takes": [None, [{**t, "kept": True} for t in takes[1]]]})
    with pytest.raises(InputError, match="rating.verdict must be good or bad"):
        session_bundle(studio, job, result, {"ratings": [{"verdict": "meh"}]})


def test_open_session_refuses_what_is_not_a_session(tmp_path):
    (tmp_path / "x.zip").write_bytes(b"hello" * 100)
    with pytest.raises(InputError, match="not a zip, so not a session"):
        open_session(tmp_path / "x.zip")
    newer = rezipped_manifest(tmp_path, {"format": "csm-studio-session", "version": 2})
    with pytest.raises(InputError, match="saved by a newer CSM Studio"):
        open_session(newer)


def rezipped_manifest(folder: Path, manifest: dict) -> Path:
    with zipfile.ZipFile(folder / "m.zip", "w") as z:
        z.writestr("manifest.json", json.dumps(manifest))
    return folder / "m.zip"


# -- Reproduce -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_session_reproduces_bit_for_bit_with_the_watermark_on(studio, run, bundle):
    assert studio.watermark_key is not None  # every sample below carries the (tiny) AudioSeal mark
    done = reproduce(studio, bundle)
    assert done.all_matched and done.same_model and done.same_device_and_dtype and done.same_watermark
    assert done.notes == []
    for match, new_path, old_path in zip(done.turns, done.result.turn_paths, run[1].turn_paths):
        np.testing.assert_array_equal(pcm(new_path), pcm(old_path))
        assert (match.matched, match.max_abs_diff, match.samples) == (True, 0, len(pcm(old_path)))
        assert match.samples == match.bundle_samples > 0 and match.seed == match.bundle_seed
    np.testing.assert_array_equal(pcm(done.result.audio_path), pcm(run[1].audio_path))  # the stitched conversation
    report = done.report()
    assert report["all_matched"] is True and [t["seed"] for t in report["turns"]] == [42, 43, 44]
    assert json.loads(json.dumps(report)) == report


@pytest.mark.slow
def test_a_bundle_from_before_one_frame_first_chunks_reproduces_in_its_own_chunks(studio, tmp_path):
    """Such a bundle says no first_chunk_frames: it was streamed, and watermarked, with a first chunk of 2 frames."""
    assert studio.watermark_key is not None and FIRST_CHUNK_FRAMES != LEGACY_FIRST_CHUNK_FRAMES == 2
    job = studio.prepare(parse_script("[0] Hello there.\n[1] Of course."), [Voice(0, "river")], ([], [], []), SETTINGS)
    old_job = replace(job, first_chunk_frames=LEGACY_FIRST_CHUNK_FRAMES)  # as the app made every turn then
    *_, result = studio.run(old_job)
    made = session_bundle(studio, old_job, result)

    def as_before(manifest):
        del manifest["settings"]["first_chunk_frames"]

    def in_todays_chunks(manifest):
        manifest["settings"]["first_chunk_frames"] = FIRST_CHUNK_FRAMES

    legacy_zip = rezipped(made, tmp_path / "legacy.zip", as_before)
    legacy = reproduce(studio, legacy_zip)
    assert legacy.all_matched and [t.max_abs_diff for t in legacy.turns] == [0, 0] and legacy.notes == []
    # Opened on the page, it keeps its chunks: a Redo of one of its turns streams as the bundle's did.
    state = page_state_of(open_session(legacy_zip))
    assert state["first_chunk_frames"] == LEGACY_FIRST_CHUNK_FRAMES
    assert page_state_of(open_session(made))["first_chunk_frames"] == LEGACY_FIRST_CHUNK_FRAMES  # it says 2
    assert page_state_of(open_session(rezipped(made, tmp_path / "t.zip", in_todays_chunks)))["first_chunk_frames"] == 1
    # The same turns in one-frame first chunks are marked otherwise: a bundle saying nothing must mean 2.
    today = reproduce(studio, rezipped(made, tmp_path / "today.zip", in_todays_chunks))
    assert not today.turns[0].matched and today.turns[0].max_abs_diff > 0 and not today.all_matched


@pytest.mark.slow
def test_a_changed_turn_is_reported_as_a_mismatch_from_that_turn_on(studio, bundle, tmp_path):
    def change(manifest):
        # Long and unlike the first: the tiny random model heeds its text only weakly.
        manifest["turns"][1]["text"] = CHANGED

    done = reproduce(studio, rezipped(bundle, tmp_path / "changed.zip", change))
    assert [t.matched for t in done.turns] == [True, False, False]  # turn 3 hears turn 2: it changes too
    assert done.turns[1].text == CHANGED and done.turns[1].max_abs_diff > 0
    assert done.turns[2].max_abs_diff > 0 and not done.all_matched
    assert done.same_device_and_dtype and done.notes == []  # the setup is the same; the session is not


@pytest.mark.slow
def test_another_device_or_watermark_is_said(studio, bundle, tmp_path):
    def elsewhere(manifest):
        manifest["model"].update(device="cuda:0", dtype="float16")

    done = reproduce(studio, rezipped(bundle, tmp_path / "cuda.zip", elsewhere))
    assert done.all_matched and not done.same_device_and_dtype and done.same_model
    [note] = done.notes
    assert note.startswith("The session was made on cuda:0 in float16, this app runs on cpu in ")
    assert "promised only on the same device and dtype" in note
    other = Studio(TINY_MODEL, device="cpu", watermark_message=0x1234).load()
    done = reproduce(other, bundle)
    assert not done.same_watermark and not any(t.matched for t in done.turns)
    assert any("this app's is on, message 0x1234" in note for note in done.notes)


@pytest.mark.slow
def test_a_turn_cut_short_by_stop_matches_the_start_of_the_turn_made_again(studio, tmp_path):
    job = studio.prepare(
        parse_script("[0] One.\n[1] Two, and more.\n[0] Three."), [Voice(0, "sol")], ([], [], []), (0.9, 50, 2, 5)
    )
    stop, chunks = threading.Event(), 0
    for event in studio.run(job, stop=stop):
        if isinstance(event, Chunk) and event.turn == 1 and (chunks := chunks + 1) == 2:
            stop.set()  # after turn 2's second chunk: 1 + 8 of its frames are kept
        result = event
    assert result.stopped and len(result.turns) == 2 and result.turns[1].stopped
    done = reproduce(studio, session_bundle(studio, job, result))
    first, second = done.turns
    assert first.matched and not first.partial
    assert second.partial and second.matched and 0 < second.bundle_samples < second.samples


def test_the_watermark_is_deterministic():
    marker = load_watermarker(tiny=True)
    chunk = noise(0.64, 5)
    marked, again = marker.mark(chunk), marker.mark(chunk.copy())
    np.testing.assert_array_equal(marked, again)
    steps = np.abs(np.round(marked * 32767) - np.round(chunk * 32767))
    assert steps.max() >= 1  # the mark changes the 16-bit samples: a reproduction must mark the same way


@pytest.mark.slow
def test_a_session_that_cannot_be_generated_here_says_why(studio, bundle, tmp_path):
    def unknown(manifest):
        manifest["voices"][0]["preset"] = "conversational_a"  # the Hub's prompts: not fetched by the tiny app

    with pytest.raises(InputError, match="cannot be generated again here: There is no preset voice 'conversational_a'"):
        reproduce(studio, rezipped(bundle, tmp_path / "preset.zip", unknown))

    def empty(manifest):
        manifest["turns"][0]["text"] = "   "

    with pytest.raises(InputError, match="Turn 1 of the session is empty"):
        reproduce(studio, rezipped(bundle, tmp_path / "empty.zip", empty))


# -- /reproduce ------------------------------------------------------------------------------------


def api_result(conversation: str, turns: list[str], info: dict) -> Result:
    """The Result a /generate_script answer stands for: its files, as downloaded, and its report."""
    return Result(Path(conversation), [Path(p) for p in turns], [TurnReport(**t) for t in info["turns"]],
                  len(info["turns"]), info["seed"], info["seconds"], info["elapsed_seconds"], info["warnings"])  # fmt: skip


@pytest.mark.slow
def test_reproduce_endpoint_regenerates_a_generate_script_result(tiny_client, studio):
    """The API gives no bundle (the page's Download session does), so the bundle of a /generate_script answer
    is made here, with session_bundle, from the request as sent and the files and report it returned."""
    from gradio_client import handle_file

    script, voices = "[0] Good morning.\n[1] Morning! Coffee?\n[0] Please.", {"0": "river", "1": "maple"}
    conversation, turns, info = tiny_client.predict(script=script, voices=voices, max_seconds=1, seed=7,
                                                    api_name="/generate_script")  # fmt: skip
    job = studio.prepare(parse_script(script), [Voice(0, "river"), Voice(1, "maple")], ([], [], []), (0.9, 50, 1, 7))
    bundle = session_bundle(studio, job, api_result(conversation, turns, info))
    again, report = tiny_client.predict(bundle=handle_file(str(bundle)), api_name="/reproduce")
    assert report["all_matched"] is True and report["same_device_and_dtype"] is True, report
    assert [(t["turn"], t["seed"], t["matched"], t["max_abs_diff"]) for t in report["turns"]] == [
        (1, 7, True, 0), (2, 8, True, 0), (3, 9, True, 0)]  # fmt: skip
    assert [t["seconds"] for t in report["turns"]] == [t["seconds"] for t in info["turns"]]
    np.testing.assert_array_equal(pcm(again), pcm(conversation))


@pytest.mark.slow
def test_reproduce_endpoint_refuses_hostile_bundles_with_a_message(tiny_client, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    escape = tmp_path / "escape.zip"
    with zipfile.ZipFile(escape, "w") as z:
        z.writestr("manifest.json", json.dumps({"format": "csm-studio-session", "version": 1}))
        z.writestr("../../evil.wav", b"owned")
    newer = rezipped_manifest(tmp_path, {"format": "csm-studio-session", "version": 7})
    for path, message in ((escape, "This zip holds a file named '../../evil.wav', which no session has"),
                          (newer, "saved by a newer CSM Studio (session format version 7)")):  # fmt: skip
        with pytest.raises(AppError) as caught:
            tiny_client.predict(bundle=handle_file(str(path)), api_name="/reproduce")
        assert message in str(caught.value) and "Traceback" not in str(caught.value)
    with pytest.raises(AppError, match="Send the session's .zip"):
        tiny_client.predict(bundle=None, api_name="/reproduce")
    with pytest.raises(AppError, match=r"bundle must be a \.zip file sent with handle_file"):
        tiny_client.predict(bundle="/etc/passwd", api_name="/reproduce")


def test_reproduce_waits_in_the_generation_queue():
    from studio.ui import build_app

    events = {fn.api_name: fn for fn in build_app(Studio(TINY_MODEL, device="cpu")).fns.values()}
    assert events["reproduce"].concurrency_id == events["generate_script"].concurrency_id == "generation"
    assert events["reproduce"].concurrency_limit == 1


@pytest.mark.slow
def test_an_int8_bundle_says_its_scheme_and_one_from_an_earlier_scheme_is_told_apart(tmp_path):
    """int8 came to cover more (the embedding tables, then the codec): an int8 bundle without a scheme is from before."""
    int8 = Studio(TINY_MODEL, device="cpu", quantize="int8").load()
    job = int8.prepare(parse_script("[0] Hello there."), [Voice(0, "river")], ([], [], []), SETTINGS)
    *_, result = int8.run(job)
    bundle = session_bundle(int8, job, result)
    assert open_session(bundle).model["quantize_scheme"] == INT8_SCHEME == 3
    done = reproduce(int8, bundle)
    assert done.all_matched and done.same_model
    earlier = reproduce(int8, rezipped(bundle, tmp_path / "scheme-1.zip", lambda m: m["model"].pop("quantize_scheme")))
    assert not earlier.same_model
    assert any("quantized int8; this app runs" in note and "quantization version 3" in note for note in earlier.notes)


@pytest.mark.slow
def test_a_session_whose_decoder_ran_compiled_is_said_and_one_that_says_nothing_ran_eager(studio, bundle, tmp_path):
    """Compiled decoder steps round differently (csm.compiling): bit-identical audio is not promised across paths.
    Bundles from before the manifest said which path ran are eager ones."""

    def compiled(manifest):
        manifest["model"]["decoder"] = "compiled"

    done = reproduce(studio, rezipped(bundle, tmp_path / "compiled.zip", compiled))
    assert done.all_matched and done.same_model and not done.same_device_and_dtype  # this bundle ran eager really
    [note] = done.notes
    assert ", its depth decoder compiled, this app runs on cpu in " in note and "with the same decoder path" in note
    assert done.report()["bundle_model"]["decoder"] == "compiled" and done.report()["model"]["decoder"] == "eager"

    def older(manifest):
        del manifest["model"]["decoder"]

    done = reproduce(studio, rezipped(bundle, tmp_path / "older.zip", older))
    assert done.all_matched and done.same_device_and_dtype and done.notes == []
