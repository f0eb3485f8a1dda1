"""The result panel: the live player, the result with its downloads, the report, and what to do next."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from studio.inputs import TURN_GAP_S
from studio.report import Result
from studio.ui.latency import LATENCY_NOTE, latency_line, latency_table
from studio.ui.style import ADD_TO_CONVERSATION, STREAMING
from studio.ui.turns import waiting_turns, with_kept_takes


@dataclass
class ResultPanel:
    status: gr.Markdown
    live: gr.Audio
    audio: gr.Audio
    info: gr.Markdown
    files: gr.File
    reuse_seed: gr.Button
    keep: gr.Button
    use_turn: gr.Dropdown  # which turn of a script "Use as voice" takes
    use_speaker: gr.Dropdown  # whose voice it becomes; its choices follow the voice cards
    use_voice: gr.Button
    use_row: gr.Row


def result_panel(speaker_names: list) -> ResultPanel:
    gr.Markdown("### Result")
    status = gr.Markdown("", elem_id="status-line")
    live = gr.Audio(label="Live: plays while it is generated", streaming=True, autoplay=True, interactive=False,
                    visible=STREAMING, buttons=[], elem_id="live-audio")  # fmt: skip
    audio = gr.Audio(label="Result", type="filepath", format="wav", interactive=False, buttons=["download"],
                     elem_id="result-audio")  # fmt: skip
    info = gr.Markdown("*Nothing generated yet.*", elem_id="result-info")
    files = gr.File(label="Each turn's clip", file_count="multiple", visible=False, interactive=False,
                    elem_id="turn-files")  # fmt: skip
    with gr.Row():
        reuse_seed = gr.Button("♻ Reuse this seed", size="sm", visible=False, elem_id="reuse-seed")
        keep = gr.Button(ADD_TO_CONVERSATION, size="sm", visible=False, elem_id="keep-result")
    with gr.Row(visible=False, equal_height=True) as use_row:
        use_turn = gr.Dropdown([], label="Turn", visible=False, min_width=190, elem_id="use-turn")
        use_speaker = gr.Dropdown(speaker_names, value=0, label="As the voice of", min_width=150,
                                  elem_id="use-speaker")  # fmt: skip
        use_voice = gr.Button("🎤 Use as voice", size="sm", elem_id="use-voice")
    if not STREAMING:
        gr.Markdown("*Live playback is off (ffmpeg is not installed): the result appears when it is done.*")
    return ResultPanel(status, live, audio, info, files, reuse_seed, keep, use_turn, use_speaker, use_voice, use_row)


def turn_table(result: Result) -> str:
    rows = ["| # | Spk | Text | Length |", "|---|---|---|---|"]
    for t in result.turns:
        short = (t.text if len(t.text) <= 60 else t.text[:60] + "…").replace("|", "\\|")
        mark = " ■ partial" if t.stopped else ("" if t.ended_by_model else " (length limit)")
        voice = f" · {t.voice}" if t.voice else ""
        rows.append(f"| {t.index + 1} | {t.speaker}{voice} | {short} | {t.seconds:.1f}&nbsp;s{mark} |")
    return "\n".join(rows)


def stop_summary(result: Result) -> str:
    partial = next((t for t in result.turns if t.stopped), None)
    if result.planned_turns == 1:
        cut = f"The line was cut at {partial.seconds:.1f} s and is kept, marked partial." if partial else ""
        return f"■ **Stopped.** {cut}"
    done = sum(not t.stopped for t in result.turns)
    text = f"■ **Stopped.** {done} of {result.planned_turns} turns finished"
    if partial is not None:
        text += f"; turn {partial.index + 1} was cut at {partial.seconds:.1f} s and is kept, marked partial"
    return text + "."


def describe_result(result: Result, description: str) -> str:
    """The report under the result: the seed first, as it is what a user copies."""
    speed = result.seconds / max(result.elapsed_s, 1e-6)
    parts = [
        f"**Seed {result.seed}** · {result.seconds:.2f} s of audio · generated in {result.elapsed_s:.1f} s "
        f"({speed:.1f}× real time)<br><small>{description}</small>"
    ]
    if result.stopped:
        parts.append(stop_summary(result))
    if result.planned_turns == 1 and result.turns and not result.stopped:
        t = result.turns[0]
        limit = "stopped at the length limit: raise *Max length* if it was cut off"
        parts.append(f"{t.frames} frames · {'ended by the model' if t.ended_by_model else limit}")
    elif result.planned_turns > 1 and result.turns:
        limit = (
            ""
            if all(t.ended_by_model or t.stopped for t in result.turns)
            else " · (length limit): the model did not end these turns, raise *Max length* if they were cut off"
        )
        parts.append(turn_table(result))
        parts.append(
            f"Turn *n* used seed {result.seed} + *n* − 1 · turns are {TURN_GAP_S:g} s apart in the conversation{limit}"
        )
    if result.turns:
        one = result.planned_turns == 1
        parts += [latency_line(result.turns[0]) if one else latency_table(result.turns), LATENCY_NOTE]
    parts += [f"⚠️ {w}" for w in result.warnings]
    return "\n\n".join(parts)


def withheld_summary(result: Result, description: str, waiting: int) -> str:
    """The report while blind turns wait for a choice: the seed and the time, nothing of any length or ending
    (the result's are take A's; its speeds too, as they come from A's length)."""
    which = "a take is kept" if waiting == 1 else f"a take of each of the {waiting} blind turns is kept"
    return (
        f"**Seed {result.seed}** · generated in {result.elapsed_s:.1f} s<br><small>{description}</small>\n\n"
        f"🙈 **Blind:** the conversation, its length and how each turn ended appear here once {which}."
    )


def result_summary(result: Result, state: dict, description: str) -> str:
    """The report under the result, of its turns as the page keeps them (`studio.ui.turns`)."""
    waiting = waiting_turns(state)
    if waiting:
        return withheld_summary(result, description, waiting)
    return describe_result(with_kept_takes(result, state), description)
