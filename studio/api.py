"""The named API endpoints, /generate and /generate_script: plain arguments in, WAV files and a report out."""

from __future__ import annotations

import gradio as gr

from studio.errors import InputError, user_facing_errors
from studio.inputs import DEFAULT_MAX_SECONDS, TURN_GAP_S, check_line, check_speaker, parse_script
from studio.jobs import ONE_AT_A_TIME
from studio.report import Result
from studio.service import Studio, Voice

GENERATE_DOC = (
    "Speak one line in context. Returns a 24 kHz WAV and a report (seed, seconds, frames, dropped context). "
    "context_audio/context_text/context_speakers: the conversation so far, one entry per clip, oldest first; "
    'voices: preset voices as speaker prompts, e.g. {"0": "river"}; speakers 0-9; seed -1: random.'
)
SCRIPT_DOC = (
    "Speak a script, one turn per line as `[speaker] text` (speakers 0-9), each turn in the context of the ones "
    f"before. Returns the stitched conversation ({TURN_GAP_S} s between turns), each turn's WAV, and a report."
)


def api_voices(voices) -> list[Voice]:
    """`{"speaker": "preset id"}` -> Voices."""
    if voices is None:
        return []
    if not isinstance(voices, dict):
        raise InputError('voices must map speaker numbers to preset ids, like {"0": "river", "1": "maple"}.')
    chosen = []
    for key, preset_id in voices.items():
        speaker = check_speaker(key, f"voices: the speaker {key!r}")
        if not isinstance(preset_id, str):
            raise InputError(f"voices: speaker {speaker}'s voice must be a preset id (text), got {preset_id!r}.")
        chosen.append(Voice(speaker, preset_id=preset_id))
    return chosen


def api_handlers(studio: Studio):
    def run(lines, context_audio, context_text, context_speakers, voices, settings) -> Result:
        job = studio.prepare(lines, api_voices(voices), (context_audio, context_text, context_speakers), settings)
        result = None
        for result in studio.run(job):  # only the last event, the Result, is kept
            pass
        if result.error:  # the API answers whole requests: a failure midway fails the request
            raise InputError(result.error)
        return result

    # gradio names the API's parameters after these functions' own: each is spelled out.
    def generate(
        text, speaker, context_audio, context_text, context_speakers, voices, temperature, topk, max_seconds, seed
    ):
        with user_facing_errors():
            studio.require_generator()  # said first: without the model nothing else matters
            result = run([check_line(text, speaker)], context_audio, context_text, context_speakers, voices,
                         (temperature, topk, max_seconds, seed))  # fmt: skip
            return str(result.audio_path), result.info(studio.description)

    def generate_script(
        script, context_audio, context_text, context_speakers, voices, temperature, topk, max_seconds, seed
    ):
        with user_facing_errors():
            studio.require_generator()
            result = run(parse_script(script), context_audio, context_text, context_speakers, voices,
                         (temperature, topk, max_seconds, seed))  # fmt: skip
            return str(result.audio_path), [str(p) for p in result.turn_paths], result.info(studio.description)

    return generate, generate_script


def api_endpoints(studio: Studio) -> None:
    """Hidden components give the endpoints plain, named arguments. Numbers arrive unrounded (no
    `precision`), so 1.5 is refused as a speaker or seed rather than rounded to 2."""
    generate, generate_script = api_handlers(studio)
    with gr.Column(visible=False):
        text, script = gr.Textbox(label="text"), gr.Textbox(label="script")
        speaker = gr.Number(0, label="speaker")
        context = [
            gr.File(value=[], file_count="multiple", type="filepath", label="context_audio"),
            gr.JSON(value=[], label="context_text"),
            gr.JSON(value=[], label="context_speakers"),
            gr.JSON(value={}, label="voices"),
        ]
        settings = [
            gr.Number(0.9, label="temperature"),
            gr.Number(50, label="topk"),
            gr.Number(DEFAULT_MAX_SECONDS, label="max_seconds"),
            gr.Number(-1, label="seed"),
        ]
        audio = gr.Audio(type="filepath", format="wav", label="audio")
        conversation = gr.Audio(type="filepath", format="wav", label="conversation")
        turns = gr.File(file_count="multiple", label="turns")
        info = gr.JSON(label="info")
        generate_trigger, script_trigger = gr.Button(), gr.Button()
    generate_trigger.click(generate, [text, speaker, *context, *settings], [audio, info], api_name="generate",
                           api_description=GENERATE_DOC, **ONE_AT_A_TIME)  # fmt: skip
    script_trigger.click(generate_script, [script, *context, *settings], [conversation, turns, info],
                         api_name="generate_script", api_description=SCRIPT_DOC, **ONE_AT_A_TIME)  # fmt: skip
