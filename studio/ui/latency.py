"""How fast each turn came, as the result panel says it: first audio, real-time factor, frames/s, context reused."""

from __future__ import annotations

from studio.jobs import TurnReport


def seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}&nbsp;s"


def reuse(t: TurnReport) -> str:
    """How much of the prompt the model did not have to read again (it still held it)."""
    if not t.prompt_frames:
        return "–"
    return f"{t.reused_context_frames} of {t.prompt_frames} frames"


def speed(t: TurnReport) -> str:
    rtf = "–" if t.real_time_factor is None else f"RTF {t.real_time_factor:.2f}"
    fps = "–" if t.frames_per_s is None else f"{t.frames_per_s:.1f} frames/s"
    return f"{rtf} · {fps}"


def latency_line(t: TurnReport) -> str:
    """One line's figures, for a single line's report."""
    if t.first_audio_from_request_s is None:
        return "No audio came, so no timings."
    return (
        f"First audio {seconds(t.first_audio_from_request_s)} after the click ({seconds(t.first_audio_from_turn_s)} "
        f"after the turn began) · {speed(t)} · prompt frames reused: {reuse(t)}"
    )


def latency_table(turns: list[TurnReport]) -> str:
    """Each turn's figures, for a script's report."""
    rows = ["| # | First audio | Speed | Prompt reused |", "|---|---|---|---|"]
    for t in turns:
        first = seconds(t.first_audio_from_request_s)
        if t.first_audio_from_turn_s is not None:
            first += f" ({seconds(t.first_audio_from_turn_s)})"
        rows.append(f"| {t.index + 1} | {first} | {speed(t)} | {reuse(t)} |")
    return "\n".join(rows)


LATENCY_NOTE = (
    "<small>First audio: from the click to the turn's first sound (in brackets: from the turn's own start); "
    "RTF: seconds taken per second of audio (below 1 is faster than real time); prompt reused: prompt frames "
    "the model still held from before, so not read again.</small>"
)
