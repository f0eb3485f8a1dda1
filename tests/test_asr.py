"""Automatic transcription: the tiny random Whisper through the real pipeline, loaded lazily and once, its
bounds, and an empty transcript in a request becoming the recogniser's text in the generation."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from studio import asr
from studio.cli import parse_args
from studio.clips import cleaned_clip
from studio.errors import InputError
from studio.inputs import MAX_TRANSCRIPT_CHARS, Line
from studio.service import TINY_MODEL, Studio
from studio.tiny_whisper import tiny_whisper_dir

ROOT = Path(__file__).resolve().parent.parent
RIVER, MAPLE = str(ROOT / "examples" / "river.wav"), str(ROOT / "examples" / "maple.wav")
RATE = 24_000


@pytest.fixture(scope="module")
def studio():
    return Studio(TINY_MODEL, device="cpu").load()


@pytest.fixture
def fresh(monkeypatch):
    """No recogniser loaded yet in this process, and a count of how many times one is built."""
    monkeypatch.setattr(asr, "_transcribers", {})
    built = []
    real = asr._build

    def counting(model, device):
        built.append(model)
        return real(model, device)

    monkeypatch.setattr(asr, "_build", counting)
    return built


def test_the_tiny_whisper_is_a_whisper_folder_loaded_by_the_same_pipeline():
    folder = tiny_whisper_dir()
    assert {"config.json", "generation_config.json", "model.safetensors", "preprocessor_config.json",
            "tokenizer.json", "tokenizer_config.json"} <= {p.name for p in folder.iterdir()}  # fmt: skip
    transcriber = asr.load_transcriber(asr.TINY, "cpu")
    assert type(transcriber.pipe).__name__ == "AutomaticSpeechRecognitionPipeline"
    assert transcriber.pipe.model.config.model_type == "whisper"
    assert transcriber.description == "tiny random Whisper: its text is nonsense"


def test_the_tiny_whisper_writes_nonsense_that_depends_on_the_clip():
    transcriber = asr.load_transcriber(asr.TINY, "cpu")
    river, maple = (sf.read(path, dtype="float32")[0] for path in (RIVER, MAPLE))
    first, again, other = transcriber.transcribe(river), transcriber.transcribe(river), transcriber.transcribe(maple)
    assert first and first == again  # deterministic
    assert other != first  # what it hears changes what it writes
    assert first.isascii() and first.isprintable()


def test_start_up_does_not_load_the_recogniser_and_the_first_uses_load_it_once(fresh):
    studio = Studio(TINY_MODEL, device="cpu").load()
    assert fresh == [] and not asr.is_loaded(studio.asr_model, studio.asr_device)
    texts = []
    threads = [threading.Thread(target=lambda: texts.append(studio.transcribe(RIVER).text)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    studio.transcribe(MAPLE)
    assert fresh == [asr.TINY]  # four transcriptions, three of them at once: one load
    assert len(set(texts)) == 1 and asr.is_loaded(studio.asr_model, studio.asr_device)


def test_a_long_clip_is_transcribed_in_bounded_pieces_with_bounded_tokens():
    calls = []

    class Pipe:  # records what the pipeline is asked for
        def __call__(self, inputs, generate_kwargs):
            calls.append((len(inputs["raw"]) / inputs["sampling_rate"], generate_kwargs["max_new_tokens"]))
            return {"text": " word" * 2000}

    audio = 0.1 * np.random.default_rng(0).standard_normal(180 * RATE).astype(np.float32)
    text = asr.Transcriber(Pipe(), "fake", "fake", beams=1).transcribe(audio)
    assert 180 / asr.PIECE_S <= len(calls) <= 2 * 180 / asr.PIECE_S + 1
    assert sum(seconds for seconds, _ in calls) == pytest.approx(180, abs=0.01)  # every second heard once
    assert all(seconds <= asr.PIECE_S and tokens <= asr.MAX_NEW_TOKENS for seconds, tokens in calls)
    assert len(text) <= MAX_TRANSCRIPT_CHARS and text.endswith("word")  # cut at a word


def test_the_default_recogniser_follows_the_device_and_can_be_chosen(monkeypatch):
    assert asr.default_model("cuda") == "openai/whisper-large-v3-turbo"
    assert asr.default_model("cuda:0") == asr.GPU_MODEL
    assert asr.default_model("cpu") == asr.default_model("mps") == "openai/whisper-base.en"
    assert Studio("sesame/csm-1b", device="cpu").asr_model == asr.CPU_MODEL
    assert Studio(TINY_MODEL, device="cpu").asr_model == asr.TINY
    assert Studio(TINY_MODEL, device="cpu", asr_model="openai/whisper-small.en").asr_model == "openai/whisper-small.en"
    assert parse_args(["--asr-model", "tiny"]).asr_model == "tiny"
    assert parse_args([]).asr_model is None
    monkeypatch.setenv("CSM_STUDIO_ASR_MODEL", "openai/whisper-tiny.en")
    assert parse_args([]).asr_model == "openai/whisper-tiny.en"


def test_a_recogniser_that_cannot_be_loaded_says_to_type_the_transcript(tmp_path, fresh):
    studio = Studio(TINY_MODEL, device="cpu", asr_model=str(tmp_path / "no-whisper-here"))
    with pytest.raises(InputError) as caught:
        studio.transcribe(RIVER)
    message = str(caught.value)
    assert message.startswith("The speech recogniser (no-whisper-here) could not be loaded (")
    assert message.endswith("so this clip cannot be transcribed: type the words spoken in it.")
    assert str(tmp_path) not in message  # no server path


def test_a_clip_in_which_nothing_is_heard_asks_for_a_transcript(studio, monkeypatch):
    monkeypatch.setattr(asr, "transcribe_on_device", lambda model, device, audio: "")
    with pytest.raises(InputError, match="No words were heard in this clip: type the words spoken in it."):
        studio.transcribe(RIVER)


# -- in a request: an empty transcript is transcribed, and the generation uses that text ----------------


def test_an_empty_context_transcript_is_transcribed_and_generated_with(studio):
    turns = ([RIVER, MAPLE], ["", "  Hello!   I'm Maple. "], [0, 1])
    job = studio.prepare([Line(1, "Hi there.")], [], turns, (0.9, 1, 1, 5))
    heard = studio.transcribe(RIVER, role="turn").text
    river, maple = job.context
    assert (river.segment.text, river.automatic) == (heard, True)
    assert (maple.segment.text, maple.automatic) == ("Hello! I'm Maple.", False)
    np.testing.assert_array_equal(river.segment.audio.numpy(), cleaned_clip(RIVER, "x", "turn").audio)
    *_, result = studio.run(job)
    info = result.info(studio.description)
    assert info["transcripts"] == [
        {"clip": "context turn 1", "text": heard, "automatic": True},
        {"clip": "context turn 2", "text": "Hello! I'm Maple.", "automatic": False},
    ]
    assert "The transcript of context turn 1 was made by a tiny random Whisper" in " ".join(info["warnings"])


def test_an_own_voice_without_transcript_is_cleaned_up_then_transcribed(studio, tmp_path):
    from studio.service import Voice

    audio, rate = sf.read(RIVER, dtype="float32")
    path = tmp_path / "quiet-river.wav"
    sf.write(path, np.concatenate([np.zeros(2 * rate, np.float32), 0.1 * audio]), rate)
    job = studio.prepare([Line(0, "Hi.")], [Voice(0, path=str(path), transcript="")], ([], [], []), (0.9, 1, 1, 5))
    (prompt,) = job.context
    cleaned = cleaned_clip(str(path), "x", "voice").audio
    assert prompt.is_prompt and prompt.automatic
    assert prompt.segment.text == studio.transcribe_audio(cleaned)  # the cleaned-up clip is what it heard
    np.testing.assert_array_equal(prompt.segment.audio.numpy(), cleaned)
    assert len(cleaned) < len(audio) + 0.3 * rate  # the 2 s of silence are gone


def test_an_unused_own_voice_is_checked_but_not_transcribed(studio, monkeypatch):
    from studio.service import Voice

    asked = []
    monkeypatch.setattr(studio, "transcribe_audio", lambda audio, label=None: asked.append(label) or "words")
    job = studio.prepare([Line(0, "Hi.")], [Voice(3, path=RIVER, transcript="")], ([], [], []), (0.9, 1, 1, 5))
    assert asked == [] and job.context == []
