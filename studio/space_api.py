"""/infer: the API of the official sesame/csm-1b Space, so that scripts and arenas written for it work here.

The same parameters in the same order, and one audio output: the conversation's turns back to back, as
that Space joins them. The checks and limits are this app's own (studio/inputs.py), not that Space's
2,000-character cap, and the turns go through the same Studio.prepare and Studio.run as /generate_script.
"""

from __future__ import annotations

import time
from pathlib import Path

import gradio as gr
import numpy as np
import soundfile as sf

from studio.api import one_uploaded_file
from studio.errors import InputError, user_facing_errors
from studio.inputs import (
    MAX_REQUEST_SECONDS,
    MAX_SCRIPT_TURNS,
    SAMPLE_RATE,
    Line,
    check_script_text,
    check_text,
    plural,
)
from studio.jobs import ONE_AT_A_TIME
from studio.report import Result
from studio.service import Studio, Voice

INFER_TURN_SECONDS = 30  # the most audio per turn, as the official Space; long conversations share the request's
JOINED_NAME = "conversation-no-gaps.wav"
INFER_DOC = (
    "The official sesame/csm-1b Space's API: speaker A's and B's transcripts and voice clips, and the "
    "conversation, one turn per line, alternating A (speaker 0) and B (speaker 1). Returns the turns back to back "
    "as one 24 kHz WAV. Leave out a speaker's clip and transcript for the default voice."
)


def conversation_lines(conversation) -> list[Line]:
    """One turn per non-empty line, speakers 0 and 1 in turn (as the official Space), each checked as a script turn."""
    conversation = check_script_text(conversation, "gen_conversation_input", "gen_conversation_input", "one turn")
    texts = [line for line in conversation.splitlines() if line.strip()]
    if not texts:
        raise InputError(
            "gen_conversation_input is empty: write the conversation, one turn per line; "
            "the lines alternate between speaker A and speaker B."
        )
    if len(texts) > MAX_SCRIPT_TURNS:
        raise InputError(
            f"gen_conversation_input has {plural(len(texts), 'turn')}; at most {MAX_SCRIPT_TURNS} are generated "
            "at once. Split it up."
        )
    return [Line(i % 2, check_text(text, f"Turn {i + 1} of gen_conversation_input")) for i, text in enumerate(texts)]


def speaker_voices(studio: Studio, transcripts: tuple, clips: tuple) -> list[Voice]:
    """Speaker A (0) and B (1): an own clip with its transcript, or, with neither, the page's default voice
    (the official prompts when they were fetched), as that Space's defaults are its prompts."""
    voices = []
    for speaker, (transcript, clip) in enumerate(zip(transcripts, clips)):
        letter = "ab"[speaker]
        if transcript is not None and not isinstance(transcript, str):
            raise InputError(f"text_prompt_speaker_{letter} must be text, got {type(transcript).__name__}.")
        if clip is None and (transcript or "").strip():
            raise InputError(
                f"audio_prompt_speaker_{letter} is missing: send speaker {letter.upper()}'s voice clip with "
                f"handle_file(...) next to text_prompt_speaker_{letter}, or leave both out for the default voice."
            )
        if clip is None:
            voices.append(Voice(speaker, preset_id=studio.presets.all()[speaker].id))
        elif not (transcript or "").strip():
            raise InputError(
                f"text_prompt_speaker_{letter} is empty: type the words spoken in audio_prompt_speaker_{letter}, "
                "so the model can tell the voice from the words."
            )
        else:
            voices.append(Voice(speaker, path=clip, transcript=transcript))
    return voices


def joined(result: Result) -> Path:
    """The turns back to back, as the official Space returns them (/generate_script puts pauses between).
    Read as 16-bit and written as 16-bit: the samples are exactly the turn files'."""
    if len(result.turn_paths) == 1:
        return result.turn_paths[0]
    audio = np.concatenate([sf.read(path, dtype="int16")[0] for path in result.turn_paths])
    path = result.turn_paths[0].parent / JOINED_NAME
    sf.write(path, audio, SAMPLE_RATE, subtype="PCM_16")
    return path


def voice_clip(label: str) -> gr.Audio:
    """One uploaded clip, or None; anything else is refused with a message naming the argument."""
    return one_uploaded_file(gr.Audio(type="filepath", label=label), label, "an audio file")


def infer_handler(studio: Studio):
    # gradio names the API's parameters after the function's own: those of the official Space, in its order.
    # Each defaults to None, so each may be left out (an empty conversation is then refused by name).
    def infer(
        text_prompt_speaker_a=None, text_prompt_speaker_b=None, audio_prompt_speaker_a=None,
        audio_prompt_speaker_b=None, gen_conversation_input=None, request: gr.Request = None,
    ):  # fmt: skip
        with user_facing_errors():
            started = time.perf_counter()  # first audio counts from the request's start
            studio.require_generator()
            lines = conversation_lines(gen_conversation_input)
            voices = speaker_voices(studio, (text_prompt_speaker_a, text_prompt_speaker_b),
                                    (audio_prompt_speaker_a, audio_prompt_speaker_b))  # fmt: skip
            seconds = min(INFER_TURN_SECONDS, MAX_REQUEST_SECONDS // len(lines))
            session = request.session_hash if request is not None else None
            job = studio.prepare(lines, voices, ([], [], []), (0.9, 50, seconds, -1), session=session)
            job.requested_at = started
            result = None
            for result in studio.run(job):  # only the last event, the Result, is kept
                pass
            if result.error:  # a failure midway fails the request, as on the other endpoints
                raise InputError(result.error)
            return str(joined(result))

    return infer


def infer_endpoint(studio: Studio) -> None:
    """/infer, from hidden components named as the official Space's."""
    with gr.Column(visible=False):
        inputs = [
            gr.Textbox(label="text_prompt_speaker_a"),
            gr.Textbox(label="text_prompt_speaker_b"),
            voice_clip("audio_prompt_speaker_a"),
            voice_clip("audio_prompt_speaker_b"),
            gr.Textbox(label="gen_conversation_input", lines=4),
        ]
        audio, trigger = gr.Audio(type="filepath", format="wav", label="audio"), gr.Button()
    trigger.click(infer_handler(studio), inputs, [audio], api_name="infer", api_description=INFER_DOC, **ONE_AT_A_TIME)
