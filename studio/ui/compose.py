"""Panel 3, what to say: one line and its speaker, or a script; the settings; Generate and Stop."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from csm.generator import MAX_TAKES
from studio.inputs import (
    DEFAULT_MAX_SECONDS,
    MAX_REQUEST_SECONDS,
    MAX_SCRIPT_CHARS,
    MAX_SCRIPT_TURNS,
    MAX_SECONDS_LIMIT,
    MAX_SPEAKER_ID,
    MAX_TEXT_CHARS,
)
from studio.ui.style import SHOWN_CARDS

SCRIPT_EXAMPLE = """[0] Hey, did you get a chance to look at the garden this morning?
[1] I did! The tomatoes are finally turning red.
[0] Finally. I was starting to think they never would."""

# What a text box holds at most: far past the limit, so over-long text is still seen and refused by
# name, yet a paste of megabytes cannot make a request the server refuses unread (its body limit).
TYPED_CHARS = 20 * MAX_TEXT_CHARS

GENERATE, GENERATING = "▶ Generate", "Generating…"  # the button's label, and while a run is queued or going


def generate_busy() -> dict:
    """Generate while a run of the page's (a generation or a Redo) is queued or going: gradio runs an event once
    at a time, so a click would be dropped without a word, and one queued behind a Redo would escape its Stop."""
    return gr.update(value=GENERATING, interactive=False)


def generate_idle() -> dict:
    return gr.update(value=GENERATE, interactive=True)


LINE_EXAMPLES = [
    "Hey, how are you doing today?",
    "Honestly, I have no idea, but it was really catchy.",
    "Let's meet at seven o'clock in front of the library.",
]

# Runs in the browser on every keystroke: the text is never cut, the count says when it is too long.
# It counts as the server does, with runs of whitespace as one space.
COUNTER_JS = f"""(text) => {{
    const n = (text || "").trim().split(/\\s+/).join(" ").length, max = {MAX_TEXT_CHARS};
    const shown = n.toLocaleString("en") + " / " + max.toLocaleString("en") + " characters";
    return n > max ? "⚠️ " + shown + ": too long for one turn, split it into script lines" : shown;
}}"""


@dataclass
class Compose:
    mode: gr.Radio
    line_group: gr.Group
    text: gr.Textbox
    counter: gr.Markdown
    speaker: gr.Dropdown
    examples: gr.Examples
    script_group: gr.Group
    script: gr.Textbox
    temperature: gr.Slider
    topk: gr.Slider
    max_seconds: gr.Slider
    seed: gr.Number
    takes: gr.Slider
    blind: gr.Checkbox
    meter: gr.HTML
    generate: gr.Button
    stop: gr.Button

    @property
    def inputs(self) -> set:
        return {self.mode, self.text, self.speaker, self.script, self.temperature, self.topk, self.max_seconds,
                self.seed, self.takes, self.blind}  # fmt: skip

    def settings(self, data: dict) -> tuple:
        return data[self.temperature], data[self.topk], data[self.max_seconds], data[self.seed]


def settings_panel() -> tuple:
    with gr.Accordion("Settings", open=False, elem_id="settings"):
        with gr.Row():
            temperature = gr.Slider(0.1, 1.5, value=0.9, step=0.05, label="Temperature",
                                    info="Lower: steadier; higher: more varied")  # fmt: skip
            topk = gr.Slider(1, 200, value=50, step=1, label="Top-k", info="1 = greedy (deterministic)")
        with gr.Row():
            max_seconds = gr.Slider(1, MAX_SECONDS_LIMIT, value=DEFAULT_MAX_SECONDS, step=1,
                                    label="Max length per turn (s)", elem_id="max-seconds",
                                    info=f"A request makes at most {MAX_REQUEST_SECONDS} s in all")  # fmt: skip
            seed = gr.Number(-1, precision=0, label="Seed", elem_id="seed",
                             info="-1 = random; the seed used is shown after each run")  # fmt: skip
    return temperature, topk, max_seconds, seed


def takes_settings() -> tuple:
    """Takes are outside the Settings accordion: comparing versions is what an evaluator comes for."""
    with gr.Row(equal_height=True):
        takes = gr.Slider(1, MAX_TAKES, value=1, step=1, label="Takes", elem_id="takes", scale=2,
                          info="Versions of each turn, made side by side in one pass (A, B, C, D)")  # fmt: skip
        blind = gr.Checkbox(False, label="Blind: shuffle the takes, hide which is which until one is kept",
                            elem_id="blind", scale=1)  # fmt: skip
    return takes, blind


def compose_panel(speaker_names: list, can_generate: bool) -> Compose:
    """What to say, the settings and the buttons; Generate and Stop are off when the model is not loaded."""
    gr.Markdown("### 3 · What to say")
    mode = gr.Radio(["One line", "Script"], value="One line", show_label=False, elem_id="mode")
    with gr.Group(visible=True) as line_group:
        with gr.Row():
            text = gr.Textbox(label="Text", placeholder="What should be said next?", lines=2, scale=4,
                              max_length=TYPED_CHARS, elem_id="line-text")  # fmt: skip
            speaker = gr.Dropdown(speaker_names[:SHOWN_CARDS], value=0, label="Speaker", scale=1, min_width=170,
                                  elem_id="line-speaker")  # fmt: skip
        counter = gr.Markdown(f"0 / {MAX_TEXT_CHARS:,} characters", elem_id="text-counter")
    examples = gr.Examples([[t] for t in LINE_EXAMPLES], inputs=[text], label="Try")
    with gr.Group(visible=False) as script_group:
        script = gr.Textbox(
            label=f"Script: one turn per line, as [speaker] text (speakers 0 to {MAX_SPEAKER_ID}; "
            "the voice cards give 0 to 3 their voices)",
            value=SCRIPT_EXAMPLE, lines=6, max_lines=MAX_SCRIPT_TURNS, max_length=2 * MAX_SCRIPT_CHARS,
            elem_id="script-text",
        )  # fmt: skip
    takes, blind = takes_settings()
    temperature, topk, max_seconds, seed = settings_panel()
    meter = gr.HTML("", elem_id="context-meter", padding=False)
    with gr.Row():
        generate = gr.Button(GENERATE, variant="primary", size="lg", scale=4, elem_id="generate",
                             interactive=can_generate)  # fmt: skip
        stop = gr.Button("■ Stop", variant="stop", size="lg", scale=1, elem_id="stop", interactive=can_generate)
    return Compose(mode, line_group, text, counter, speaker, examples, script_group, script, temperature, topk,
                   max_seconds, seed, takes, blind, meter, generate, stop)  # fmt: skip
