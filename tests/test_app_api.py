"""The app's API, called with gradio_client on `python app.py --model tiny` (offline, a separate process)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from tests.conftest import ARTIFACTS, AppServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PRESETS = json.loads((ROOT / "examples" / "presets.json").read_text())["presets"]
RIVER, MAPLE = PRESETS[0], PRESETS[1]
RATE = 24_000
FAST = {"max_seconds": 2}  # short turns keep the tests quick on a CPU


def read(path) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32")
    assert rate == RATE, f"{path} is at {rate} Hz"
    assert audio.ndim == 1 and len(audio) > 0, f"{path} holds no mono audio"
    return audio


def example(preset: dict) -> dict:
    return handle_file(str(ROOT / "examples" / preset["file"]))


def write_clip(name: str, audio: np.ndarray, rate: int = RATE) -> Path:
    path = ARTIFACTS / "inputs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, rate, subtype="PCM_16")
    return path


# -- /generate ---------------------------------------------------------------------------------


def test_generate_returns_24khz_speech_and_the_seed_used(tiny_client):
    audio_path, info = tiny_client.predict(
        text="Hello there, how are you?", speaker=1, seed=1234, **FAST, api_name="/generate"
    )
    audio = read(audio_path)
    turn = info["turns"][0]
    assert info["seed"] == turn["seed"] == 1234
    assert (turn["text"], turn["speaker"]) == ("Hello there, how are you?", 1)
    assert info["sample_rate"] == RATE
    assert abs(info["seconds"] - len(audio) / RATE) < 1e-3
    assert 0 < turn["frames"] <= 2 * 1000 / 80
    assert "noise" in info["model"]  # the tiny model says what it is


def test_a_random_seed_is_reported_and_reproduces_the_audio(tiny_client):
    first_path, first = tiny_client.predict(text="Let's meet at seven.", seed=-1, **FAST, api_name="/generate")
    again_path, again = tiny_client.predict(
        text="Let's meet at seven.", seed=first["seed"], **FAST, api_name="/generate"
    )
    assert again["seed"] == first["seed"]
    np.testing.assert_array_equal(read(first_path), read(again_path))


def test_a_repeated_context_is_reused_and_gives_the_same_audio(tiny_client):
    request = dict(text="Same voices again.", voices={"0": "sol", "1": "atlas"}, seed=77, **FAST)
    first_path, first = tiny_client.predict(**request, api_name="/generate")
    again_path, again = tiny_client.predict(**request, api_name="/generate")
    assert again["turns"][0]["reused_context_frames"] > 0  # both voices' prompts were still in the cache
    np.testing.assert_array_equal(read(first_path), read(again_path))


def test_generate_in_context_of_clips_and_preset_voices(tiny_client):
    audio_path, info = tiny_client.predict(
        text="I did! The tomatoes are finally turning red.",
        speaker=1,
        context_audio=[example(RIVER), example(MAPLE)],
        context_text=[RIVER["transcript"], MAPLE["transcript"]],
        context_speakers=[0, 1],
        voices={"0": "sol", "1": "atlas"},
        temperature=0.7,
        topk=20,
        seed=5,
        **FAST,
        api_name="/generate",
    )
    read(audio_path)
    assert info["turns"][0]["dropped_context"] == []
    assert info["warnings"] == []


# -- /generate_script --------------------------------------------------------------------------


def test_a_three_turn_script_gives_three_clips_and_their_stitched_conversation(tiny_client):
    script = "[0] Hey, did you see the garden?\n\n[1] I did! The tomatoes are red.\n[0] Finally."
    conversation_path, turn_paths, info = tiny_client.predict(
        script=script, voices={"0": "river", "1": "maple"}, seed=7, **FAST, api_name="/generate_script"
    )
    turns = [read(path) for path in turn_paths]
    conversation = read(conversation_path)
    assert len(turns) == 3
    assert [t["speaker"] for t in info["turns"]] == [0, 1, 0]
    assert [t["seed"] for t in info["turns"]] == [7, 8, 9]  # turn n uses seed + n - 1
    assert [t["text"] for t in info["turns"]] == [
        "Hey, did you see the garden?",
        "I did! The tomatoes are red.",
        "Finally.",
    ]
    gap = int(info["gap_seconds"] * RATE)  # the documented pause between turns
    assert info["gap_seconds"] == 0.25
    assert len(conversation) == sum(len(t) for t in turns) + 2 * gap
    start = 0
    for turn in turns:  # the stitched file is the turns, in order, with silence between
        np.testing.assert_allclose(conversation[start : start + len(turn)], turn, atol=1 / 32768)
        start += len(turn) + gap


def test_each_script_turn_is_conditioned_on_the_voices_and_the_turns_before(tiny_client):
    """The server's turns equal the generator's own, run here with the same context, seeds and length, each
    chunk marked by the (tiny) watermarker as it comes: the WAV is the watermarker applied to the raw audio."""
    import torch

    from csm.generator import Segment, load_csm_1b
    from csm.tiny import tiny_checkpoint_dir
    from studio.watermark import load_watermarker

    _, turn_paths, info = tiny_client.predict(
        script="[0] Hello there.\n[1] Hi!", voices={"1": "maple"}, topk=1, seed=3, **FAST, api_name="/generate_script"
    )
    generator = load_csm_1b(repo_id=str(tiny_checkpoint_dir()), device="cpu")
    marker = load_watermarker(tiny=True)
    audio, rate = sf.read(ROOT / "examples" / MAPLE["file"], dtype="float32")
    context = [Segment.from_audio(1, MAPLE["transcript"], audio, rate)]
    expected = []
    for (speaker, text), seed in zip([(0, "Hello there."), (1, "Hi!")], [3, 4]):
        stream = generator.generate_stream(text, speaker, context, max_audio_length_ms=2000, topk=1, seed=seed)
        turn = np.concatenate([marker.mark(chunk.float().numpy()) for chunk in stream])
        context.append(Segment(speaker, text, torch.from_numpy(turn)))  # the next turn hears the marked one
        expected.append(np.clip(turn, -1, 1))
    for path, want in zip(turn_paths, expected):
        np.testing.assert_allclose(read(path), want, atol=2 / 32768)  # the WAVs are 16-bit


def test_each_turn_reports_its_latency_and_the_context_reused(tiny_client):
    _, _, info = tiny_client.predict(script="[0] One.\n[1] Two.\n[0] Three.", voices={"0": "river", "1": "maple"},
                                     seed=5, **FAST, api_name="/generate_script")  # fmt: skip
    before = 0.0  # the turns before this one: generated in order, each after the last
    for t in info["turns"]:
        assert 0 < t["first_audio_from_turn_s"] <= t["generation_s"]
        assert t["first_audio_from_request_s"] >= before + t["first_audio_from_turn_s"] - 0.005  # rounded to ms
        before += t["generation_s"]
        assert t["real_time_factor"] == round(t["generation_s"] / t["seconds"], 3)
        assert t["frames_per_s"] == round(t["frames"] / t["generation_s"], 1)
        assert 0 <= t["reused_context_frames"] < t["prompt_frames"]  # the turn's own text is always read
    assert info["turns"][1]["reused_context_frames"] > 0  # both voices were in the cache from turn 1


def test_detect_says_whether_a_clip_carries_the_watermark(tiny_client):
    result = tiny_client.predict(audio=handle_file(str(ROOT / "examples" / RIVER["file"])), api_name="/detect")
    assert set(result) == {"verdict", "probability", "message"}
    assert result["verdict"] in ("made by this app", "another message", "none found")
    assert 0 <= result["probability"] <= 1
    silent = tiny_client.predict(audio=handle_file(str(write_clip("quiet.wav", np.zeros(RATE, np.float32)))),
                                 api_name="/detect")  # fmt: skip
    assert silent["verdict"] == "none found" and silent["message"] is None  # any clip is read, silent ones too
    with pytest.raises(AppError, match="cannot be read as audio"):
        corrupt = ARTIFACTS / "inputs" / "not-audio.wav"
        corrupt.write_bytes(b"not audio at all")
        tiny_client.predict(audio=handle_file(str(corrupt)), api_name="/detect")


# -- /infer: the official Space's API --------------------------------------------------------------

SPACE_PARAMETERS = ["text_prompt_speaker_a", "text_prompt_speaker_b", "audio_prompt_speaker_a",
                    "audio_prompt_speaker_b", "gen_conversation_input"]  # fmt: skip


def run_folder_of(returned: str, name: str) -> Path:
    """The server's output folder that holds the file the client downloaded (the server runs on this machine)."""
    from studio.outputs import OUTPUT_DIR

    data = Path(returned).read_bytes()
    found = [d for d in OUTPUT_DIR.glob("run-*") if (d / name).is_file() and (d / name).read_bytes() == data]
    assert len(found) == 1, f"{name} is in {len(found)} output folders"
    return found[0]


def test_infer_answers_as_the_official_space_does_for_a_tts_arena_call(tiny_client):
    """TTS Arena reads /infer's parameters from view_api, puts its text in gen_conversation_input and reads
    one audio output. Four lines alternate speakers 0 and 1; the result is the four turns back to back."""
    endpoint = tiny_client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/infer"]
    assert [p["parameter_name"] for p in endpoint["parameters"]] == SPACE_PARAMETERS
    assert [r["component"] for r in endpoint["returns"]] == ["Audio"]
    lines = ["Hey, did you see the garden?", "I did!", "The tomatoes are red.", "Finally."]
    path = tiny_client.predict(RIVER["transcript"], MAPLE["transcript"], example(RIVER), example(MAPLE),
                               "\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]), api_name="/infer")  # fmt: skip
    assert isinstance(path, str)  # one output, as the Space's: TTS Arena takes a str as the audio itself
    conversation = read(path)
    turn_paths = sorted(run_folder_of(path, "conversation-no-gaps.wav").glob("turn-*.wav"))
    assert [p.name for p in turn_paths] == [f"turn-0{i + 1}-speaker{i % 2}-own.wav" for i in range(4)]
    turns = [sf.read(p, dtype="int16")[0] for p in turn_paths]
    assert all(0 < len(t) <= 30 * RATE for t in turns)  # 30 s per turn at most, as the Space's
    # "The sum": no pause between turns, unlike /generate_script's 0.25 s; the very samples of each turn's WAV.
    assert len(conversation) == sum(len(t) for t in turns)
    np.testing.assert_array_equal(sf.read(path, dtype="int16")[0], np.concatenate(turns))


def test_infer_without_voice_clips_uses_the_default_voices(tiny_client):
    path = tiny_client.predict(gen_conversation_input="Just one line.", api_name="/infer")
    assert Path(path).name.startswith(f"speaker0-{RIVER['id']}-seed")  # the page's first voice, as for the Space
    read(path)


# -- transcription -------------------------------------------------------------------------------


def test_transcribe_returns_the_clips_text_and_the_model_that_heard_it(tiny_client, tmp_path):
    heard = tiny_client.predict(audio=example(RIVER), api_name="/transcribe")
    assert set(heard) == {"text", "model"}
    assert heard["text"] and heard["model"] == "tiny random Whisper: its text is nonsense"
    assert tiny_client.predict(audio=example(RIVER), api_name="/transcribe") == heard
    assert tiny_client.predict(audio=example(MAPLE), api_name="/transcribe")["text"] != heard["text"]
    silent = write_clip("quiet-transcribe.wav", np.zeros(RATE, np.float32))
    with pytest.raises(AppError, match="is silent"):
        tiny_client.predict(audio=handle_file(str(silent)), api_name="/transcribe")


def test_an_empty_context_transcript_is_transcribed_and_the_generation_hears_it(tiny_client):
    request = dict(text="Hi!", speaker=1, context_audio=[example(RIVER)], context_speakers=[0], voices={"1": "maple"},
                   topk=1, seed=3, **FAST)  # fmt: skip
    audio_path, info = tiny_client.predict(**request, context_text=[""], api_name="/generate")
    maple, river = info["transcripts"]  # the voice prompts first, then the conversation
    assert maple == {"clip": "speaker 1's voice (Maple)", "text": MAPLE["transcript"], "automatic": False}
    assert river["clip"] == "context turn 1" and river["automatic"] is True and river["text"]
    assert any("context turn 1 was made by a tiny random Whisper" in w for w in info["warnings"])
    # The generation used that text: typed in, it gives the same audio; another text does not.
    typed_path, typed = tiny_client.predict(**request, context_text=[river["text"]], api_name="/generate")
    assert typed["transcripts"][1] == {**river, "automatic": False} and typed["warnings"] == []
    np.testing.assert_array_equal(read(audio_path), read(typed_path))
    other_path, _ = tiny_client.predict(**request, context_text=["Something else."], api_name="/generate")
    assert not np.array_equal(read(audio_path), read(other_path))


def test_a_script_transcribes_an_empty_context_transcript_too(tiny_client):
    _, _, info = tiny_client.predict(script="[0] Hi.", context_audio=[example(MAPLE)], context_text=[None],
                                     context_speakers=[1], seed=1, **FAST, api_name="/generate_script")  # fmt: skip
    (maple,) = info["transcripts"]
    assert maple["automatic"] is True and maple["text"]


# -- bad input: a clear message, and the server keeps serving ------------------------------------


@pytest.fixture(scope="module")
def bad_clips():
    rng = np.random.default_rng(0)
    corrupt = ARTIFACTS / "inputs" / "corrupt.wav"
    corrupt.parent.mkdir(parents=True, exist_ok=True)
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(rng.integers(0, 256, 400, dtype=np.uint8)))
    # A 2 s WAV cut off after 0.02 s of samples (a broken upload): its header still promises 2 s.
    truncated = write_clip("truncated.wav", 0.1 * rng.standard_normal(2 * RATE).astype(np.float32))
    truncated.write_bytes(truncated.read_bytes()[: 44 + 2 * 480])
    return {
        "corrupt": corrupt,
        "silent": write_clip("silent.wav", np.zeros(2 * RATE, np.float32)),
        # 170 s: more than the 2048-frame window (164 s) holds next to a 10 s reply. 8 kHz keeps it small.
        "long": write_clip("long.wav", 0.1 * rng.standard_normal(170 * 8000).astype(np.float32), rate=8000),
        "short": write_clip("short.wav", 0.1 * rng.standard_normal(RATE // 10).astype(np.float32)),
        "truncated": truncated,
    }


def context_of(clip, text="Some words.", speaker=0) -> dict:
    return {"context_audio": [handle_file(str(clip))], "context_text": [text], "context_speakers": [speaker]}


BAD_REQUESTS = {
    "empty text": ("/generate", lambda clips: {"text": "   "}, "The text is empty"),
    "five takes": ("/generate", lambda clips: {"text": "Hi", "takes": 5}, "Takes must be a whole number from 1 to 4"),
    "no takes": ("/generate_script", lambda clips: {"script": "[0] Hi", "takes": 0}, "Takes must be a whole number"),
    "huge text": ("/generate", lambda clips: {"text": "blah " * 3000}, "characters long; one turn can be at most"),
    "script line without a speaker tag": (
        "/generate_script",
        lambda clips: {"script": "[0] Hello there\nHi, how are you?"},
        "Script line 2 has no speaker tag",
    ),
    "empty script": ("/generate_script", lambda clips: {"script": "\n  \n"}, "The script is empty"),
    "script tag without text": ("/generate_script", lambda clips: {"script": "[1]   "}, "Script line 1 is empty"),
    "transcript that is not text": (
        "/generate",
        lambda clips: {"text": "Hi", **context_of(ROOT / "examples" / RIVER["file"], text=5)},
        "The transcript of context turn 1 must be text, got int",
    ),
    "corrupt file": (
        "/generate",
        lambda clips: {"text": "Hi", **context_of(clips["corrupt"])},
        "cannot be read as audio",
    ),
    "silent clip": ("/generate", lambda clips: {"text": "Hi", **context_of(clips["silent"])}, "is silent"),
    "too short a clip": (
        "/generate",
        lambda clips: {"text": "Hi", **context_of(clips["short"])},
        "use at least a second",
    ),
    "clip longer than the context": (
        "/generate",
        lambda clips: {"text": "Hi", "max_seconds": 10, **context_of(clips["long"])},
        "too long for the model's context",
    ),
    "transcripts not matching clips": (
        "/generate",
        lambda clips: {"text": "Hi", **context_of(clips["silent"]), "context_text": []},
        "give one transcript and one speaker for every clip",
    ),
    "unknown preset voice": (
        "/generate",
        lambda clips: {"text": "Hi", "voices": {"0": "nobody"}},
        "no preset voice 'nobody'",
    ),
    "bad speaker": (
        "/generate",
        lambda clips: {"text": "Hi", "speaker": 99},
        "speaker must be a whole number from 0 to 9",
    ),
    "fractional speaker": ("/generate", lambda clips: {"text": "Hi", "speaker": 1.5}, "speaker must be a whole number"),
    "fractional seed": ("/generate", lambda clips: {"text": "Hi", "seed": 1.5}, "Seed must be a whole number"),
    "negative speaker tag": (
        "/generate_script",
        lambda clips: {"script": "[0] Hello\n[-1] hi"},
        "Script line 2: the speaker must be a whole number from 0 to 9, got '-1'",
    ),
    "one clip, no transcript": (
        "/generate",
        lambda clips: {"text": "Hi", **context_of(clips["silent"]), "context_text": [], "context_speakers": [0]},
        "The context has 1 clip, 0 transcripts and 1 speaker",
    ),
    "context_text not a list": (
        "/generate",
        lambda clips: {"text": "Hi", **context_of(clips["silent"]), "context_text": "words"},
        "context_text must be a list, one entry per context clip, got str",
    ),
    "truncated clip": (
        "/generate",
        lambda clips: {"text": "Hi", **context_of(clips["truncated"])},
        "The clip of context turn 1 (truncated.wav) is only 0.02 s long",
    ),
    "bad temperature": ("/generate", lambda clips: {"text": "Hi", "temperature": 0}, "Temperature must be above 0"),
    "/infer: empty conversation": (
        "/infer",
        lambda clips: {"gen_conversation_input": " \n\n "},
        "gen_conversation_input is empty: write the conversation, one turn per line",
    ),
    "/infer: a transcript without its clip": (
        "/infer",
        lambda clips: {"text_prompt_speaker_b": "Words.", "gen_conversation_input": "Hi\nHello"},
        "audio_prompt_speaker_b is missing: send speaker B's voice clip with handle_file(...)",
    ),
    "/infer: a clip without its transcript": (
        "/infer",
        lambda clips: {"audio_prompt_speaker_a": example(RIVER), "gen_conversation_input": "Hi"},
        "text_prompt_speaker_a is empty: type the words spoken in audio_prompt_speaker_a",
    ),
    "/infer: a path, not a file": (
        "/infer",
        lambda clips: {
            "text_prompt_speaker_a": "Hi.",
            "audio_prompt_speaker_a": "/etc/passwd",
            "gen_conversation_input": "Hi",
        },
        "audio_prompt_speaker_a must be an audio file sent with handle_file(...)",
    ),
    "/infer: a corrupt clip": (
        "/infer",
        lambda clips: {
            "text_prompt_speaker_a": "Hi.",
            "audio_prompt_speaker_a": handle_file(str(clips["corrupt"])),
            "gen_conversation_input": "Hi",
        },
        "cannot be read as audio",
    ),
    "/infer: a turn over our limit": (
        "/infer",
        lambda clips: {"gen_conversation_input": "Hi\n" + "blah " * 300},
        "Turn 2 of gen_conversation_input is 1,499 characters long; one turn can be at most 1,000",
    ),
    "/infer: too many turns": (
        "/infer",
        lambda clips: {"gen_conversation_input": "Hi\n" * 25},
        "gen_conversation_input has 25 turns; at most 24",
    ),
    "too long a turn": (
        "/generate",
        lambda clips: {"text": "Hi", "max_seconds": 600},
        "Max length per turn must be between",
    ),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_bad_input_gets_a_clear_message(tiny_client, bad_clips, case):
    endpoint, request, message = BAD_REQUESTS[case]
    with pytest.raises(AppError) as caught:
        tiny_client.predict(**request(bad_clips), api_name=endpoint)
    assert message in str(caught.value)
    assert "Traceback" not in str(caught.value)
    assert not str(caught.value).startswith("The text:")  # each message names its own argument


def test_the_server_keeps_serving_after_bad_input(tiny_client, bad_clips):
    for endpoint, request, _ in BAD_REQUESTS.values():
        with pytest.raises(AppError):
            tiny_client.predict(**request(bad_clips), api_name=endpoint)
    audio_path, info = tiny_client.predict(text="Still here.", seed=11, **FAST, api_name="/generate")
    assert info["seed"] == 11
    read(audio_path)


def test_a_bad_speaker_is_named_as_the_speaker_argument(tiny_client):
    with pytest.raises(AppError) as caught:
        tiny_client.predict(text="Hi", speaker=99, api_name="/generate")
    assert str(caught.value).startswith("speaker must be a whole number from 0 to 9, got 99")


# -- speakers, notes, summaries and file names -------------------------------------------------------


def test_speakers_up_to_nine_speak_and_a_speaker_without_a_voice_gets_a_note(tiny_client):
    audio_path, info = tiny_client.predict(text="Hello.", speaker=5, voices={"0": "river"}, seed=2, **FAST,
                                           api_name="/generate")  # fmt: skip
    read(audio_path)
    assert info["turns"][0]["speaker"] == 5
    assert info["warnings"] == [
        "Speaker 0 says nothing in this request, so its voice was not used.",
        "Speaker 5 has no voice prompt and no earlier turn, so the model picked a voice at random.",
    ]


def test_downloads_are_named_by_turn_speaker_and_voice(tiny_client):
    audio_path, _ = tiny_client.predict(text="Hi.", speaker=1, voices={"1": "maple"}, seed=8, **FAST,
                                        api_name="/generate")  # fmt: skip
    assert Path(audio_path).name == "speaker1-maple-seed8.wav"
    conversation, turn_paths, _ = tiny_client.predict(
        script="[0] Hey.\n[1] Hi.\n[7] Yo.", voices={"0": "river", "1": "maple"}, seed=3, **FAST,
        api_name="/generate_script",
    )  # fmt: skip
    assert [Path(p).name for p in turn_paths] == [
        "turn-01-speaker0-river.wav", "turn-02-speaker1-maple.wav", "turn-03-speaker7.wav",
    ]  # fmt: skip
    assert Path(conversation).name == "conversation.wav"


def test_context_left_out_of_a_full_window_is_reported_once(tiny_client):
    rng = np.random.default_rng(3)
    clips = [write_clip(f"long-{i}.wav", 0.1 * rng.standard_normal(80 * 8000).astype(np.float32), 8000)
             for i in range(2)]  # fmt: skip
    # Two 80 s clips and a 5 s reply do not fit the 164 s window: every turn is generated without the first.
    _, _, info = tiny_client.predict(
        script="[0] One.\n[1] Two.\n[0] Three.", context_audio=[handle_file(str(c)) for c in clips],
        context_text=["Words.", "More words."], context_speakers=[0, 1], max_seconds=5, topk=1, seed=1,
        api_name="/generate_script",
    )  # fmt: skip
    assert [t["dropped_context"] for t in info["turns"]] == [["context turn 1"]] * 3
    assert info["warnings"] == [
        "The model's window was full, so turns 1–3 were generated without some of the context "
        "(the oldest goes first, the speaker prompts last): context turn 1 from turn 1 on."
    ]


# -- a model that cannot be loaded ----------------------------------------------------------------


def test_without_the_model_the_app_starts_and_says_how_to_fix_it(tmp_path):
    """sesame/csm-1b offline with an empty Hub cache: no crash; the page and every request say why."""
    from gradio_client import Client

    env = {"HF_HOME": str(tmp_path / "hf-home"), "HF_TOKEN": ""}
    server = AppServer("no-model", "--model", "sesame/csm-1b", env=env).wait_until_serving(timeout=120)
    try:
        page_config = server.url + "config"
        import httpx

        config = httpx.get(page_config, timeout=10).text
        assert "could not be loaded" in config and "HF_TOKEN" in config  # the banner, with the fix
        client = Client(server.url, verbose=False, analytics_enabled=False)
        for _ in range(2):  # and it keeps answering
            with pytest.raises(AppError) as caught:
                client.predict(text="Hello", api_name="/generate")
            assert "could not be loaded" in str(caught.value)
            assert "nothing can be generated. config.json of sesame/csm-1b is not in the local" in str(caught.value)
            assert "HF_HUB_OFFLINE" in str(caught.value)  # csm's own explanation of what went wrong
    finally:
        server.stop()


def test_the_readme_api_example_runs(tiny_app, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    example = readme.split("## API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert '"http://127.0.0.1:7860/"' in example
    monkeypatch.chdir(ROOT)  # the example names files relative to the repository
    names: dict = {}
    exec(compile(example.replace('"http://127.0.0.1:7860/"', repr(tiny_app.url)), "README.md", "exec"), names)
    read(names["audio_path"])
    assert len(names["turn_paths"]) == 3 and names["info"]["turns"][2]["text"] == "Finally."
    read(names["conversation_path"])
    assert names["heard"]["text"] and "nonsense" in names["heard"]["model"]
    infer_example = readme.split("## API", 1)[1].split("```python\n", 2)[2].split("```", 1)[0]
    assert 'api_name="/infer"' in infer_example
    exec(compile(infer_example, "README.md", "exec"), names)  # the same client
    read(names["infer_path"])


def test_takes_of_a_line_come_back_one_after_another_and_repeat_with_their_seed(tiny_client):
    args = {"text": "Which one sounds best?", "speaker": 1, "voices": {"1": "maple"}, "seed": 11, **FAST}
    path, info = tiny_client.predict(**args, takes=3, api_name="/generate")
    takes = info["takes"]
    assert [t["take"] for t in takes] == ["A", "B", "C"] and Path(path).name == "takes.wav"
    audio, rate = sf.read(path, dtype="float32")
    assert rate == RATE and takes[0]["start_seconds"] == 0
    for before, after in zip(takes, takes[1:]):
        assert after["start_seconds"] == pytest.approx(before["start_seconds"] + before["seconds"] + 0.25, abs=1e-3)
    assert len(audio) / RATE == pytest.approx(takes[-1]["start_seconds"] + takes[-1]["seconds"], abs=1e-3)
    report = info["turns"][0]["takes"]
    assert [t["file"] for t in report] == [t["file"] for t in takes]
    assert report[1]["file"] == "speaker1-maple-seed11-take-B.wav"
    pieces = [audio[round(t["start_seconds"] * RATE) :][: round(t["seconds"] * RATE)] for t in takes]
    assert not np.array_equal(pieces[0], pieces[1])  # each take samples its own way
    again, _ = tiny_client.predict(**args, takes=3, api_name="/generate")
    assert Path(again).read_bytes() == Path(path).read_bytes()  # the same seed, the same takes
    single, single_info = tiny_client.predict(**args, api_name="/generate")  # takes=1: as before
    assert "takes" not in single_info and single_info["turns"][0]["takes"] == []
    assert Path(single).name == "speaker1-maple-seed11.wav"


def test_takes_of_a_script_every_take_a_file_and_take_a_in_the_conversation(tiny_client):
    conversation, files, info = tiny_client.predict(
        script="[0] Hey.\n[1] Hi there.", voices={"0": "river", "1": "maple"}, seed=3, takes=2, **FAST,
        api_name="/generate_script",
    )  # fmt: skip
    assert [Path(f).name for f in files] == [
        "turn-01-speaker0-river.wav", "turn-01-speaker0-river-take-B.wav",
        "turn-02-speaker1-maple.wav", "turn-02-speaker1-maple-take-B.wav",
    ]  # fmt: skip
    assert [[t["file"] for t in turn["takes"]] for turn in info["turns"]] == [
        [Path(f).name for f in files[:2]],
        [Path(f).name for f in files[2:]],
    ]
    joined, _ = sf.read(conversation, dtype="float32")
    a1, a2 = (sf.read(f, dtype="float32")[0] for f in (files[0], files[2]))
    assert len(joined) == len(a1) + int(0.25 * RATE) + len(a2)
    assert np.array_equal(joined[: len(a1)], a1)


def test_a_middle_turn_is_redone_through_the_api_with_the_turns_before_it_kept(tiny_client):
    script = "[0] One.\n[1] Two.\n[0] Three.\n[1] Four."
    args = {"script": script, "voices": {"0": "river", "1": "maple"}, "seed": 42, **FAST}
    _, turns, info = tiny_client.predict(**args, api_name="/generate_script")
    before = [handle_file(t) for t in turns[:2]]
    conversation, redone, again = tiny_client.predict(
        **args, redo_from=3, turn_audio=before, api_name="/generate_script"
    )
    assert [(t["index"], t["seed"], t["text"]) for t in again["turns"]] == [(2, 44, "Three."), (3, 45, "Four.")]
    assert [Path(p).name for p in redone] == ["turn-03-speaker0-river.wav", "turn-04-speaker1-maple.wav"]
    joined = sf.read(conversation, dtype="int16")[0]
    gap = int(0.25 * RATE)
    one, two = (sf.read(t, dtype="int16")[0] for t in turns[:2])
    new = [sf.read(t, dtype="int16")[0] for t in redone]
    np.testing.assert_array_equal(joined[: len(one)], one)  # the turns before it, byte for byte
    np.testing.assert_array_equal(joined[len(one) + gap : len(one) + gap + len(two)], two)
    assert len(joined) == len(one) + len(two) + sum(len(t) for t in new) + 3 * gap
    with pytest.raises(AppError, match="give the audio of the 2 earlier turns in turn_audio"):
        tiny_client.predict(**args, redo_from=3, turn_audio=before[:1], api_name="/generate_script")
    with pytest.raises(AppError, match="redo_from must be a whole number from 0 to 4"):
        tiny_client.predict(**args, redo_from=7, api_name="/generate_script")
