"""The "Check a clip" tab: does a clip carry this app's watermark?"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from studio.watermark import Detection

ABOUT = """Every clip this app makes carries an inaudible [AudioSeal](https://github.com/facebookresearch/audioseal)
watermark with a 16-bit message. Its detector is public: upload any clip to see whether it has one, and whose."""


@dataclass
class CheckPanel:
    audio: gr.Audio
    button: gr.Button
    result: gr.Markdown


def check_panel() -> CheckPanel:
    gr.Markdown(ABOUT)
    with gr.Row():
        audio = gr.Audio(
            sources=["upload", "microphone"], type="filepath", label="Clip to check", elem_id="check-audio"
        )
        with gr.Column():
            button = gr.Button("Check for a watermark", variant="primary", elem_id="check-button")
            result = gr.Markdown("", elem_id="check-result")
    return CheckPanel(audio, button, result)


def describe_detection(found: Detection, expected: int, tiny: bool = False) -> str:
    if found.verdict == "made by this app":
        head = f"✓ **Made by this app**: watermark message {found.message:#06x}"
    elif found.verdict == "another message":
        head = f"**A watermark with another message**: {found.message:#06x} (this app writes {expected:#06x})"
    else:
        head = "**No watermark found**"
    tail = "<br>*(The tiny test model's detector is random: its verdicts mean nothing.)*" if tiny else ""
    return f"{head}<br>Detector's probability: {found.probability:.2f}{tail}"
