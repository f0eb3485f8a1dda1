"""The named API endpoints: /generate and /generate_script (plain arguments in, WAV files and a report out),
/transcribe and /detect (a clip in, what it says or whose mark it carries out)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gradio as gr
import soundfile as sf
from gradio.data_classes import FileData, GradioRootModel
from gradio.utils import get_upload_folder, is_in_or_equal
from pydantic import ValidationError

from csm.audio import load_mono, save_wav
from studio.errors import InputError, user_facing_errors
from studio.inputs import (
    DEFAULT_MAX_SECONDS,
    MAX_CLIPS,
    MAX_SPEAKER_ID,
    SAMPLE_RATE,
    TURN_GAP_S,
    check_line,
    check_speaker,
    number,
    parse_script,
    plural,
    shown,
    whole_number,
)
from studio.jobs import CLIP_WORK, ONE_AT_A_TIME, TAKE_LABELS
from studio.outputs import stitch
from studio.report import Result
from studio.service import Studio, Voice

GENERATE_DOC = (
    "Speak one line in context. Returns a 24 kHz WAV and a report (seed, seconds, frames, dropped context). "
    "context_audio/context_text/context_speakers: the conversation so far, one entry per clip, oldest first "
    '(a context_text entry "" is transcribed automatically); '
    'voices: preset voices as speaker prompts, e.g. {"0": "river"}; speakers 0-9; seed -1: random.'
)
SCRIPT_DOC = (
    "Speak a script, one turn per line as `[speaker] text` (speakers 0-9), each turn in the context of the ones "
    f"before. Returns the stitched conversation ({TURN_GAP_S} s between turns), each turn's WAV, and a report."
)


class AnyPayload(GradioRootModel):
    root: Any = None


TRANSCRIBE_DOC = (
    "Transcribe a clip with the app's speech recogniser (Whisper). Returns {'text', 'model'}: the words heard, "
    "and the model that heard them. The whole clip is transcribed (at most 180 s), in pieces cut at pauses."
)
DETECT_DOC = (
    "Check a clip for the AudioSeal watermark that this app puts on every output. Returns verdict ('made by "
    "this app', 'another message' or 'none found'), the detector's probability, and the 16-bit message read."
)


def clip_files(label: str) -> gr.File:
    """context_audio: a list of files. Anything else is refused with a message naming the argument, not
    by gradio's own check (which says nothing a caller can act on); one file alone is a list of one.

    A gr.File whose payload check is swapped on the instance (a subclass would make gradio write a .pyi
    stub next to this module); the API still describes a list of files, from the schema cached first.
    """
    files = gr.File(value=[], file_count="multiple", type="filepath", label=label)
    files.api_info()
    files.data_model = AnyPayload

    def preprocess(payload: AnyPayload | None) -> list[str]:
        given = None if payload is None else payload.root
        given = [given] if isinstance(given, dict) else given or []
        if not isinstance(given, list) or len(given) > MAX_CLIPS:
            raise gr.Error(f"{label} must be a list of at most {MAX_CLIPS} audio files (handle_file(...)).",
                           print_exception=False)  # fmt: skip
        try:  # as gradio's own check: each file must be one uploaded to this server, nowhere else
            checked = [FileData.model_validate(f, context={"validate_meta": True}) for f in given]
        except ValidationError:
            raise gr.Error(f"{label} must be a list of audio files, each sent with handle_file(...).",
                           print_exception=False) from None  # fmt: skip
        uploads = get_upload_folder()
        if not all(is_in_or_equal(f.path, uploads) for f in checked):
            raise gr.Error(f"{label} must be files uploaded with handle_file(...).", print_exception=False)
        return [f.path for f in checked]

    files.preprocess = preprocess
    return files


def one_uploaded_file(component, label: str, what: str):
    """`component` (a gr.File or gr.Audio, type "filepath") made to take one file uploaded here, or None: any
    other payload gets a message naming the argument (`what` it must be), not gradio's own check; the API
    still describes the component's file, from the schema cached first."""
    component.api_info()
    component.data_model = AnyPayload

    def preprocess(payload: AnyPayload | None) -> str | None:
        given = None if payload is None else payload.root
        if given is None:
            return None
        try:
            checked = FileData.model_validate(given, context={"validate_meta": True})
        except ValidationError:
            raise gr.Error(f"{label} must be {what} sent with handle_file(...).", print_exception=False) from None
        if not is_in_or_equal(checked.path, get_upload_folder()):
            raise gr.Error(f"{label} must be a file uploaded with handle_file(...).", print_exception=False)
        return checked.path

    component.preprocess = preprocess
    return component


def api_voices(voices) -> list[Voice]:
    """`{"speaker": "preset id"}` -> Voices."""
    if voices is None:
        return []
    if not isinstance(voices, dict) or len(voices) > MAX_SPEAKER_ID + 1:
        raise InputError('voices must map speaker numbers (0 to 9) to preset ids, like {"0": "river", "1": "maple"}.')
    chosen = []
    for key, preset_id in voices.items():
        speaker = check_speaker(key, f"voices: the speaker {shown(key)}")
        if not isinstance(preset_id, str) or len(preset_id) > 64:
            raise InputError(f"voices: speaker {speaker}'s voice must be a preset id, got {shown(preset_id)}.")
        chosen.append(Voice(speaker, preset_id=preset_id))
    return chosen


def takes_one_after_another(paths: list[Path]) -> tuple[Path, list[dict]]:
    """/generate's takes in its one audio output: A, B, ... TURN_GAP_S apart, and where each one is."""
    audios = [sf.read(path, dtype="float32")[0] for path in paths]
    places, start = [], 0.0
    for label, path, audio in zip(TAKE_LABELS, paths, audios):
        places.append({"take": label, "start_seconds": round(start, 3), "seconds": round(len(audio) / SAMPLE_RATE, 3),
                       "file": path.name})  # fmt: skip
        start += len(audio) / SAMPLE_RATE + TURN_GAP_S
    joined = paths[0].parent / "takes.wav"
    save_wav(joined, stitch(audios), SAMPLE_RATE)
    return joined, places


def check_redo_from(redo_from, script) -> int:
    """The 0-based index of the first turn to generate: redo_from 0 or 1 is all of them."""
    turns = len(parse_script(script))
    return max(whole_number(redo_from, "redo_from", 0, turns, hint=" (the script's turn to start from; 0: all)") - 1, 0)


def redo_request(lines: list, first: int, earlier: list, context: tuple, seed) -> tuple:
    """A script whose turns before `first` are given (`turn_audio`): they join the context, their texts and
    speakers from the script, and turn n keeps seed + n - 1, as in a run of the whole script."""
    if len(earlier) != first:
        raise InputError(
            f"redo_from={first + 1} generates from turn {first + 1}: give the audio of the "
            f"{plural(first, 'earlier turn')} in turn_audio, oldest first (got {plural(len(earlier), 'file')})."
        )
    if not first:
        return lines, context, seed
    paths, texts, speakers = (list(part or []) for part in context)
    paths += earlier
    texts += [line.text for line in lines[:first]]
    speakers += [line.speaker for line in lines[:first]]
    given = seed not in (None, -1, "-1") and str(seed).strip()
    return lines[first:], (paths, texts, speakers), (number(seed, "Seed") + first) if given else seed


def with_earlier_turns(result: Result, earlier: list) -> Path | None:
    """A redo's conversation: the given earlier turns, then the new ones, TURN_GAP_S apart."""
    if result.audio_path is None:
        return None
    audios = [load_mono(path, SAMPLE_RATE).numpy() for path in earlier] + [
        sf.read(result.audio_path, dtype="float32")[0]
    ]
    path = result.audio_path.parent / "conversation-redone.wav"
    save_wav(path, stitch(audios), SAMPLE_RATE)
    return path


def api_handlers(studio: Studio):
    def run(lines, context_audio, context_text, context_speakers, voices, settings, request, takes=1,
            first_turn=0) -> Result:  # fmt: skip
        context, started = (context_audio, context_text, context_speakers), time.perf_counter()
        job = studio.prepare(lines, api_voices(voices), context, settings, session=request.session_hash, takes=takes,
                             first_turn=first_turn)  # fmt: skip
        job.requested_at = started  # first audio counts from the request's start, its clips' reading included
        result = None
        for result in studio.run(job):  # only the last event, the Result, is kept
            pass
        if result.error:  # the API answers whole requests: a failure midway fails the request
            raise InputError(result.error)
        return result

    # gradio names the API's parameters after these functions' own: each is spelled out.
    # context_audio defaults to None here: its component's empty list does not tell the API it is optional.
    def generate(
        text, speaker, context_audio=None, context_text=None, context_speakers=None, voices=None, temperature=0.9,
        topk=50, max_seconds=DEFAULT_MAX_SECONDS, seed=-1, takes=1, request: gr.Request = None,
    ):  # fmt: skip
        with user_facing_errors():
            studio.require_generator()  # said first: without the model nothing else matters
            result = run([check_line(text, speaker)], context_audio, context_text, context_speakers, voices,
                         (temperature, topk, max_seconds, seed), request, takes)  # fmt: skip
            info = result.info(studio.description)
            if not result.take_paths:
                return str(result.audio_path), info
            path, info["takes"] = takes_one_after_another(result.take_paths[0])
            return str(path), info

    def generate_script(
        script, context_audio=None, context_text=None, context_speakers=None, voices=None, temperature=0.9, topk=50,
        max_seconds=DEFAULT_MAX_SECONDS, seed=-1, takes=1, redo_from=0, turn_audio=None, request: gr.Request = None,
    ):  # fmt: skip
        with user_facing_errors():
            studio.require_generator()
            lines, earlier, first = parse_script(script), list(turn_audio or []), check_redo_from(redo_from, script)
            lines, context, seed = redo_request(lines, first, earlier, (context_audio, context_text, context_speakers),
                                                seed)  # fmt: skip
            result = run(lines, *context, voices, (temperature, topk, max_seconds, seed), request, takes, first)
            files = [p for paths in result.take_paths for p in paths] or result.turn_paths  # turn by turn, A first
            conversation = with_earlier_turns(result, earlier) if first else result.audio_path
            return str(conversation), [str(p) for p in files], result.info(studio.description)

    def detect(audio):
        with user_facing_errors():
            found = studio.detect(audio)
            return {"verdict": found.verdict, "probability": found.probability, "message": found.message}

    def transcribe(audio):
        with user_facing_errors():
            heard = studio.transcribe(audio)
            return {"text": heard.text, "model": heard.model}

    return generate, generate_script, detect, transcribe


def api_endpoints(studio: Studio) -> None:
    """Hidden components give the endpoints plain, named arguments. Numbers arrive unrounded (no
    `precision`), so 1.5 is refused as a speaker or seed rather than rounded to 2."""
    generate, generate_script, detect, transcribe = api_handlers(studio)
    with gr.Column(visible=False):
        text, script = gr.Textbox(label="text"), gr.Textbox(label="script")
        speaker = gr.Number(0, label="speaker")
        context = [
            clip_files("context_audio"),
            gr.JSON(value=[], label="context_text"),
            gr.JSON(value=[], label="context_speakers"),
            gr.JSON(value={}, label="voices"),
        ]
        settings = [
            gr.Number(0.9, label="temperature"),
            gr.Number(50, label="topk"),
            gr.Number(DEFAULT_MAX_SECONDS, label="max_seconds"),
            gr.Number(-1, label="seed"),
            gr.Number(1, label="takes"),
        ]
        redo = [gr.Number(0, label="redo_from"), clip_files("turn_audio")]
        audio = gr.Audio(type="filepath", format="wav", label="audio")
        conversation = gr.Audio(type="filepath", format="wav", label="conversation")
        turns = gr.File(file_count="multiple", label="turns")
        info = gr.JSON(label="info")
        clip, detection = gr.File(type="filepath", label="audio"), gr.JSON(label="detection")
        heard = gr.JSON(label="transcription")
        generate_trigger, script_trigger, detect_trigger, transcribe_trigger = (gr.Button() for _ in range(4))
    generate_trigger.click(generate, [text, speaker, *context, *settings], [audio, info], api_name="generate",
                           api_description=GENERATE_DOC, **ONE_AT_A_TIME)  # fmt: skip
    script_trigger.click(generate_script, [script, *context, *settings, *redo], [conversation, turns, info],
                         api_name="generate_script", api_description=SCRIPT_DOC, **ONE_AT_A_TIME)  # fmt: skip
    detect_trigger.click(detect, [clip], [detection], api_name="detect", api_description=DETECT_DOC, **CLIP_WORK)
    transcribe_trigger.click(transcribe, [clip], [heard], api_name="transcribe", api_description=TRANSCRIBE_DOC,
                             **CLIP_WORK)  # fmt: skip
