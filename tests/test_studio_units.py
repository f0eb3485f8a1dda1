"""The studio's rules without a server: messages, speaker ids, summaries, file names, Stop, clip notes."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import soundfile as sf

from studio import clips, inputs, jobs, outputs
from studio.errors import InputError, sentence
from studio.inputs import Line, Settings
from studio.jobs import Chunk, TurnDone, TurnReport, TurnStarted
from studio.report import Result, result_warnings
from studio.service import TINY_MODEL, Studio, Voice
from studio.stops import StopSignals

RATE = 24_000


# -- input rules and messages -------------------------------------------------------------------


@pytest.mark.parametrize(
    "script, message",
    [
        ("[-1] hi", "Script line 1: the speaker must be a whole number from 0 to 9, got '-1'"),
        ("[x] hi", "Script line 1: the speaker must be a whole number from 0 to 9, got 'x'"),
        ("[1.5] hi", "Script line 1: the speaker must be a whole number from 0 to 9, got '1.5'"),
        ("[10] hi", "Script line 1: the speaker must be a whole number from 0 to 9, got '10'"),
    ],
)
def test_a_bad_speaker_tag_is_named_as_such_not_as_a_missing_tag(script, message):
    with pytest.raises(InputError) as caught:
        inputs.parse_script(script)
    assert str(caught.value).startswith(message)


def test_speakers_zero_to_nine_are_accepted_everywhere_and_fractions_refused():
    assert [line.speaker for line in inputs.parse_script("[4] a\n[9] b\n[0] c")] == [4, 9, 0]
    assert inputs.check_line("Hi", "7") == Line(7, "Hi")
    for bad in (1.5, "1.5", 99, -1, "1e400", True):
        with pytest.raises(InputError, match=r"^speaker must be a whole number from 0 to 9"):
            inputs.check_line("Hi", bad)


def test_a_fractional_seed_is_refused_not_rounded():
    with pytest.raises(InputError, match="Seed must be a whole number"):
        Settings.parse(0.9, 50, 10, 1.5)
    assert Settings.parse(0.9, 50, 10, 2.0).seed == 2


def test_messages_start_with_a_capital_unless_they_name_an_argument():
    assert sentence("the model ended") == "The model ended"
    assert (
        sentence("context_text and context_speakers must be lists") == "context_text and context_speakers must be lists"
    )
    assert sentence("speaker must be a whole number") == "speaker must be a whole number"
    assert sentence("config.json of x is missing") == "config.json of x is missing"
    assert inputs.plural(1, "clip") == "1 clip" and inputs.plural(0, "transcript") == "0 transcripts"


def test_over_long_text_is_refused_with_its_length_never_cut():
    with pytest.raises(InputError, match="The text is 5,000 characters long; one turn can be at most 1,000"):
        inputs.check_text("x" * 5000)


# -- one summary per generation -------------------------------------------------------------------


def report(index, dropped=(), frames=10) -> TurnReport:
    return TurnReport(index, 0, "Hi.", index, frames, frames * 0.08, True, list(dropped))


def test_dropped_context_is_summarised_once_for_a_long_script():
    dropped, reports = [], []
    for i in range(17):  # from turn 5 on, each turn leaves out one more of the oldest turns
        if i >= 4:
            dropped = dropped + [f"turn {i - 3} of this run"]
        reports.append(report(i, dropped))
    warnings = result_warnings(reports, 17)
    assert len(warnings) == 1
    assert warnings[0].startswith(
        "The model's window was full, so turns 5–17 were generated without some of the context (the oldest goes "
        "first, the speaker prompts last): turn 1 of this run from turn 5 on, turn 2 of this run from turn 6 on, "
    )
    assert warnings[0].count("turn 1 of this run") == 1


def test_warnings_read_as_sentences_for_a_single_line():
    warnings = result_warnings([report(0, ["context turn 1"])], 1)
    assert warnings[0].startswith("The model's window was full, so the turn was generated without context turn 1")
    assert result_warnings([report(0, frames=0)], 1)[0].startswith("The model ended the turn at once")
    # A script stopped after its first turn still names that turn as one of several.
    assert result_warnings([report(0, frames=0)], 4)[0].startswith("The model ended turn 1 at once")


# -- downloads named by content ---------------------------------------------------------------------


def test_files_are_named_by_turn_speaker_and_voice():
    assert outputs.turn_file_name(1, 1, "Maple") == "turn-02-speaker1-maple.wav"
    assert outputs.turn_file_name(0, 5, None, partial=True) == "turn-01-speaker5-partial.wav"
    assert outputs.line_file_name(0, "own voice", 42) == "speaker0-own-voice-seed42.wav"


# -- clip notes on arrival --------------------------------------------------------------------------


def write(tmp_path, name, audio, rate=RATE) -> str:
    path = tmp_path / name
    sf.write(path, audio, rate)
    return str(path)


def test_a_clip_is_judged_as_soon_as_it_arrives(tmp_path):
    rng = np.random.default_rng(0)
    voice = lambda seconds: 0.1 * rng.standard_normal(int(seconds * 8000)).astype(np.float32)  # noqa: E731
    notes = {
        "silent": clips.clip_note(write(tmp_path, "silent.wav", np.zeros(2 * RATE, np.float32)), 152),
        "short": clips.clip_note(write(tmp_path, "short.wav", voice(0.2), 8000), 152),
        "ten minutes": clips.clip_note(write(tmp_path, "long.wav", voice(600), 8000), 152),
        "just over": clips.clip_note(write(tmp_path, "over.wav", voice(155), 8000), 152),
        "long": clips.clip_note(write(tmp_path, "long-ok.wav", voice(45), 8000), 152),
        "good": clips.clip_note(write(tmp_path, "good.wav", voice(4), 8000), 152),
    }
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    notes["corrupt"] = clips.clip_note(str(tmp_path / "corrupt.wav"), 152)
    assert "is silent" in notes["silent"] and notes["silent"].startswith("⚠️")
    assert "only 0.20 s long" in notes["short"] and "short.wav" in notes["short"]
    assert "(long.wav) is 600 s long; clips of at most 180 s are taken" in notes["ten minutes"]
    assert notes["just over"].startswith("⚠️ This clip is 155 s long")  # what Generate would refuse
    assert "cannot be read as audio" in notes["corrupt"]
    assert notes["long"].startswith("ℹ️ 45.0 s") and notes["good"] == "✓ 4.0 s of audio"
    assert clips.clip_note(None, 164) == ""


# -- a real job on the tiny model: voices, notes, Stop ----------------------------------------------


@pytest.fixture(scope="module")
def studio():
    return Studio(TINY_MODEL, device="cpu").load()


def test_a_speaker_without_a_voice_gets_a_note_and_unused_voices_are_said(studio):
    lines = inputs.parse_script("[0] Hello.\n[5] Hi!")
    job = studio.build_job(lines, [Voice(0, "river"), Voice(9, "maple")], [], Settings(seed=1))
    assert [clip.segment.speaker for clip in job.context] == [0]  # speaker 9 says nothing: not in the prompt
    assert job.voices == {0: "River"}
    assert job.notes == [
        "Speaker 9 says nothing in this request, so its voice was not used.",
        "Speaker 5 has no voice prompt and no earlier turn, so the model picked a voice at random.",
    ]
    quiet = studio.build_job(lines, [Voice(9, "maple")], [], Settings(seed=1), note_unused_voices=False)
    assert len(quiet.notes) == 1 and quiet.notes[0].startswith("Speaker 0 and speaker 5 have no voice")


@pytest.mark.slow
def test_stop_keeps_the_finished_turns_and_the_interrupted_one(studio):
    lines = inputs.parse_script("[0] One.\n[1] Two.\n[0] Three.\n[1] Four.")
    job = studio.build_job(lines, [Voice(0, "river")], [], Settings(max_seconds=3, topk=1, seed=4))
    stop, events = threading.Event(), []
    for event in studio.run(job, stop=stop):
        events.append(event)
        if isinstance(event, Chunk) and event.turn == 1:
            stop.set()  # pressed during turn 2
    result = events[-1]
    assert isinstance(result, Result) and result.stopped
    assert [t.index for t in result.turns] == [0, 1] and [t.stopped for t in result.turns] == [False, True]
    first = next(e for e in events if isinstance(e, TurnDone))
    partial_chunks = [e.audio for e in events if isinstance(e, Chunk) and e.turn == 1]
    assert [p.name for p in result.turn_paths] == ["turn-01-speaker0-river.wav", "turn-02-speaker1-partial.wav"]
    saved = [sf.read(p, dtype="float32")[0] for p in result.turn_paths]
    np.testing.assert_allclose(saved[0], first.audio, atol=1 / 32768)
    np.testing.assert_allclose(saved[1], np.concatenate(partial_chunks), atol=1 / 32768)
    assert result.audio_path.name == "conversation.wav"
    assert not jobs._generation_lock.locked()  # the model was freed at once
    # The next job runs, and turn 1 comes out the same as before.
    *_, again = studio.run(
        studio.build_job(lines[:1], [Voice(0, "river")], [], Settings(max_seconds=3, topk=1, seed=4))
    )
    np.testing.assert_array_equal(sf.read(again.turn_paths[0], dtype="float32")[0], saved[0])


def test_stop_pressed_while_the_job_waited_generates_nothing_and_writes_nothing(studio, monkeypatch):
    job = studio.build_job([Line(0, "Hi.")], [], [], Settings(max_seconds=1, seed=1))
    monkeypatch.setattr(jobs, "generate_lines", lambda job: pytest.fail("the job ran"))
    stop = threading.Event()
    stop.set()
    (result,) = studio.run(job, stop=stop)
    assert result.stopped and result.turns == [] and result.audio_path is None and result.turn_paths == []


@pytest.mark.slow
def test_a_failure_midway_keeps_the_turns_before_it(studio, monkeypatch):
    real = jobs.generate_lines

    def fails_in_turn_two(job):
        for event in real(job):
            yield event
            if isinstance(event, Chunk) and event.turn == 1:
                raise RuntimeError("the GPU went away")

    monkeypatch.setattr(jobs, "generate_lines", fails_in_turn_two)
    job = studio.build_job(inputs.parse_script("[0] One.\n[1] Two.\n[0] Three."), [], [],
                           Settings(max_seconds=1, topk=1, seed=2))  # fmt: skip
    *_, result = studio.run(job)
    assert result.error == "Generation failed unexpectedly (RuntimeError). The app is still running: try again."
    assert not result.stopped and [t.stopped for t in result.turns] == [False, True]
    assert [p.name for p in result.turn_paths] == ["turn-01-speaker0.wav", "turn-02-speaker1-partial.wav"]
    assert not jobs._generation_lock.locked()


def test_a_failure_before_any_audio_fails_the_request(studio, monkeypatch):
    def fails_at_once(job):
        raise RuntimeError("no GPU")
        yield

    monkeypatch.setattr(jobs, "generate_lines", fails_at_once)
    job = studio.build_job([Line(0, "Hi.")], [], [], Settings(max_seconds=1, seed=1))
    with pytest.raises(Exception, match="Generation failed unexpectedly"):
        list(studio.run(job))


def test_stop_signals_are_one_per_session_and_forgotten_when_done():
    stops = StopSignals()
    stops.arm("a")
    stops.arm("b")
    running = stops.flag("a")
    stops.stop("a")
    assert running.is_set() and not stops.flag("b").is_set()  # another tab's job goes on
    stops.arm("a")  # the next Generate of that session starts unstopped
    assert not stops.flag("a").is_set()
    stops.release("a", running)  # the old job's end does not forget the new job's flag
    assert len(stops) == 2
    armed = stops.flag("a")
    stops.arm("a")  # a second click while that job is pending: Stop must still reach it
    assert stops.flag("a") is armed
    stops.stop("a")
    assert armed.is_set()
    stops.release("a", stops.flag("a"))
    stops.release("b")  # the page was closed
    assert len(stops) == 0
    stops.stop("gone")  # a Stop from a session with no job does nothing
    assert len(stops) == 0


def test_stop_as_a_turn_starts_keeps_its_first_chunk(studio):
    lines = inputs.parse_script("[0] One.\n[1] Two.")
    job = studio.build_job(lines, [], [], Settings(max_seconds=2, topk=1, seed=4))
    stop, events = threading.Event(), []
    for event in studio.run(job, stop=stop):
        events.append(event)
        if isinstance(event, TurnStarted) and event.report.index == 1:
            stop.set()  # pressed while turn 2's prompt was being read: its first chunk is made already
    result = events[-1]
    assert [t.stopped for t in result.turns] == [False, True]
    first_chunk = next(e.audio for e in events if isinstance(e, Chunk) and e.turn == 1)
    assert result.turns[1].seconds == round(len(first_chunk) / RATE, 3) > 0


def test_a_clip_is_refused_from_its_header_before_a_sample_is_decoded(tmp_path, monkeypatch):
    """A 1 Hz header (48,000 s to resample) and a 10-minute clip are refused without decoding them."""
    one_hz = write(tmp_path, "one-hz.wav", 0.1 * np.ones(48_000, np.float32), rate=1)
    ten_minutes = write(tmp_path, "long.wav", 0.1 * np.ones(600 * 8000, np.float32), rate=8000)
    monkeypatch.setattr(clips, "load_mono", lambda *a, **k: pytest.fail("decoded before the header was checked"))
    for path, message in [(one_hz, "declares a sample rate of 1 Hz"), (ten_minutes, "is 600 s long")]:
        with pytest.raises(InputError, match=message):
            clips.load_clip(path, "Words.", 0, "turn 1")
    with pytest.raises(InputError, match="The transcript of turn 1 is 5,000 characters long; at most 4,000"):
        clips.load_clip(one_hz, "x" * 5000, 0, "turn 1")


def test_a_local_checkpoint_that_fails_is_named_without_its_server_path(tmp_path):
    folder = tmp_path / "my-checkpoint"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "csm", "num_hidden_layers": 1000000000}')
    studio = Studio(str(folder), device="cpu").load()
    assert studio.load_error and "my-checkpoint" in studio.load_error
    assert str(tmp_path) not in studio.load_error and str(tmp_path) not in studio.banner()[0]


def test_a_neutral_link_holds_the_same_audio_under_a_name_that_says_nothing_of_it(tmp_path):
    from studio.outputs import neutral_link

    takes = [tmp_path / f"turn-01-take-{label}.wav" for label in "AB"]
    for i, take in enumerate(takes):
        take.write_bytes(bytes([i]) * 100)
    links = [neutral_link(take) for take in takes]
    assert [link.read_bytes() for link in links] == [take.read_bytes() for take in takes]
    assert all(link.parent == tmp_path and "take-A" not in link.name and "take-B" not in link.name for link in links)
    assert links[0] != links[1] and neutral_link(takes[0]) == links[0]  # one per file, made once


def test_a_cleaned_voice_clip_plays_at_its_own_level():
    """The preview of a voice clip is the audio the model hears: gradio scales a float array to full scale,
    so the page hands it 16-bit PCM, which gradio plays as it is."""
    import gradio as gr

    clip = (0.7 * np.sin(np.linspace(0, 100, 24_000))).astype(np.float32)
    played = sf.read(gr.Audio(type="numpy").postprocess((24_000, outputs.pcm16(clip))).path)[0]
    assert np.abs(played - clip).max() < 1e-4  # not rescaled: a float32 array would peak at 1.0
    assert outputs.pcm16(np.array([2.0, -2.0, 0.5], np.float32)).tolist() == [32767, -32767, 16384]
