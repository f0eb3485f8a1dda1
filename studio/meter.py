"""The context meter: how much of the model's window a request's voices, conversation, text and reply take.

The numbers are the generator's own plan (`Generator.plan_context`) for the request's first turn, the
same call that fits the prompt when it runs: what the meter says is left out is what will be.
"""

from __future__ import annotations

from dataclasses import dataclass

from csm.generator import FRAME_MS
from studio.jobs import Job

# The bar's colours, one per part of the window (the page's style has the legend's markers).
PARTS = (("voices", "#6366f1"), ("conversation", "#0ea5e9"), ("text", "#f59e0b"), ("reply", "#10b981"))


@dataclass
class Meter:
    window: int  # the model's window, in frames (2048 for CSM-1B)
    voices: int  # frames of the speaker prompts kept
    conversation: int  # frames of the earlier turns kept
    text: int  # the first line's text
    reply: int  # the longest reply asked for (max length)
    dropped: list[str]  # what does not fit, oldest first, by how messages name it
    turns: int = 1  # lines in the request: later ones also carry the turns generated before them

    @property
    def prompt_frames(self) -> int:
        return self.voices + self.conversation + self.text

    @property
    def free(self) -> int:
        return self.window - self.prompt_frames - self.reply


def measure(job: Job, generator) -> Meter:
    """The meter for a job as Studio.prepare built it."""
    line, context = job.lines[0], job.context
    pinned = sum(clip.is_prompt for clip in context)
    max_ms = job.settings.max_frames * FRAME_MS
    plan = generator.plan_context(line.text, line.speaker, [c.segment for c in context], max_ms, pinned)
    kept = [i for i in range(len(context)) if i not in plan.dropped]
    return Meter(
        window=generator.model.max_seq_len,
        voices=sum(plan.context_frames[i] for i in kept if context[i].is_prompt),
        conversation=sum(plan.context_frames[i] for i in kept if not context[i].is_prompt),
        text=plan.target_frames,
        reply=job.settings.max_frames,
        dropped=[context[i].label for i in plan.dropped],
        turns=len(job.lines),
    )


def seconds(frames: int) -> str:
    return f"{frames * FRAME_MS / 1000:.1f} s"


def describe_meter(meter: Meter) -> str:
    """HTML for the page: a bar of the window, the numbers, and what would be left out."""
    widths = [(name, colour, getattr(meter, name)) for name, colour in PARTS]
    bar = "".join(
        f'<span class="meter-part" style="width:{100 * n / meter.window:.2f}%;background:{colour}" '
        f'title="{name}: {n} frames"></span>'
        for name, colour, n in widths
        if n
    )
    legend = " · ".join(
        f'<span class="meter-key" style="color:{colour}">■</span> {name} {n} ({seconds(n)})'
        for name, colour, n in widths
    )
    lines = [
        f'<div class="context-meter" role="img" aria-label="context window">{bar}</div>',
        f"<small>{legend} · free {max(meter.free, 0)} of {meter.window} frames</small>",
    ]
    if meter.dropped:
        lines.append(f"<small>⚠️ Does not fit, left out: {', '.join(meter.dropped)} (the oldest goes first, "
                     "the voices last).</small>")  # fmt: skip
    if meter.turns > 1:
        lines.append(f"<small>For the first of {meter.turns} turns: each later turn also carries the turns "
                     "before it, and the oldest context is left out first when the window fills.</small>")  # fmt: skip
    return "<br>".join(lines)
