"""/reproduce: a session bundle (a .zip from Download session) in, its turns generated again and compared out.

It runs in the generation queue (ONE_AT_A_TIME): reproducing is generating.
"""

from __future__ import annotations

import gradio as gr

from studio.api import one_uploaded_file
from studio.errors import InputError, user_facing_errors
from studio.jobs import ONE_AT_A_TIME
from studio.reproduce import reproduce
from studio.service import Studio

REPRODUCE_DOC = (
    "Generate a saved session again and compare: bundle is a .zip made by Download session. Its turns are generated "
    "again with the same voices, clips, conversation, texts, settings and seeds; returns the new conversation as a "
    "24 kHz WAV and a report: per turn matched (every 16-bit sample equal), max_abs_diff, seconds, seed; all_matched; "
    "same_device_and_dtype (bit-identical audio is promised only on the same model, device and dtype)."
)


def bundle_file(label: str) -> gr.File:
    """One uploaded .zip, or None; anything else is refused with a message naming the argument."""
    return one_uploaded_file(gr.File(type="filepath", file_types=[".zip"], label=label), label, "a .zip file")


def reproduce_handler(studio: Studio):
    def reproduce_session(bundle=None, request: gr.Request = None):  # gradio names the API's parameter after it
        with user_facing_errors():
            studio.require_generator()
            if not bundle:
                raise InputError("Send the session's .zip (made by Download session) as bundle, with handle_file(...).")
            done = reproduce(studio, bundle, request.session_hash if request is not None else None)
            return str(done.result.audio_path), done.report()

    return reproduce_session


def reproduce_endpoint(studio: Studio) -> None:
    """/reproduce, from hidden components."""
    with gr.Column(visible=False):
        bundle = bundle_file("bundle")
        conversation, report = gr.Audio(type="filepath", format="wav", label="conversation"), gr.JSON(label="report")
        trigger = gr.Button()
    trigger.click(reproduce_handler(studio), [bundle], [conversation, report], api_name="reproduce",
                  api_description=REPRODUCE_DOC, **ONE_AT_A_TIME)  # fmt: skip
