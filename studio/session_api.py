"""/reproduce: a session bundle (a .zip from Download session) in, its turns generated again and compared out.

It runs in the generation queue (ONE_AT_A_TIME): reproducing is generating.
"""

from __future__ import annotations

import gradio as gr
from gradio.data_classes import FileData
from gradio.utils import get_upload_folder, is_in_or_equal
from pydantic import ValidationError

from studio.api import AnyPayload
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
    """One uploaded file, or None. As the other endpoints' files: a payload that is not a file uploaded here
    gets a message naming the argument, not gradio's own check; the API still describes a file."""
    upload = gr.File(type="filepath", file_types=[".zip"], label=label)
    upload.api_info()  # cached before the payload check is swapped
    upload.data_model = AnyPayload

    def preprocess(payload: AnyPayload | None) -> str | None:
        given = None if payload is None else payload.root
        if given is None:
            return None
        try:
            checked = FileData.model_validate(given, context={"validate_meta": True})
        except ValidationError:
            raise gr.Error(f"{label} must be a .zip file sent with handle_file(...).", print_exception=False) from None
        if not is_in_or_equal(checked.path, get_upload_folder()):
            raise gr.Error(f"{label} must be a file uploaded with handle_file(...).", print_exception=False)
        return checked.path

    upload.preprocess = preprocess
    return upload


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
