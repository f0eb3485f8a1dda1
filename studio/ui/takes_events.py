"""The result's turns on the page: keep a take, rate it, redo a turn or the turns after it.

A part of the Page (studio/ui/events.py), kept apart as it is one concern: the rows are built by
studio/ui/turns.py inside a gr.render, and the buttons they hold are wired here.
"""

from __future__ import annotations

from dataclasses import replace

import gradio as gr

from studio.clips import MIN_CLIP_S
from studio.errors import user_message
from studio.inputs import Line
from studio.jobs import ONE_AT_A_TIME, Job
from studio.ratings import Rating
from studio.ui.compose import generate_busy
from studio.ui.style import PRIVATE, UI_ONLY
from studio.ui.result import result_summary
from studio.ui.turns import keep_take, kept, rate, replace_turns, shown_conversation, take_path


class TakeEvents:
    """Mixed into the Page: it has studio, compose, result, last_result, ratings, stops, and the job helpers."""

    rating_on = True
    BUSY = "A redo is running: keep or rate a take once it has finished (its result would undo the change)."

    def keep_button(self, k: int, t: int) -> None:
        def handler(last: dict, request: gr.Request) -> list:
            return self.kept_take(last, k, t, request.session_hash)

        button = gr.Button("Keep this take", size="sm", elem_classes=["keep-take"])
        button.click(handler, self.last_result, self.kept_outputs, **PRIVATE)

    @property
    def kept_outputs(self) -> list:
        r = self.result
        return [self.last_result, r.audio, r.info, r.keep, r.use_row, r.use_turn]

    def kept_take(self, last: dict, k: int, t: int, session: str | None = None) -> list:
        if session in self.redoing:  # the redo's result is made from the turns as they were at its click
            gr.Warning(self.BUSY)
            return [gr.update()] * len(self.kept_outputs)
        try:
            last = keep_take(last, k, t)
        except Exception as e:  # a file gone (outputs expire after hours): said, the state kept
            gr.Warning(user_message(e))
            return [gr.update()] * len(self.kept_outputs)
        return [last, shown_conversation(last), self.kept_summary(last), *self.offer_turns(last)]

    def kept_summary(self, last: dict):
        """The report after a Keep, of the kept takes (a blind result's still waits while other blind turns do)."""
        report = last.get("report")
        return gr.update() if report is None else result_summary(report, last, self.studio.description)

    def rating_row(self, turn: dict, k: int, t: int) -> None:
        rating = turn["takes"][t]["rating"]
        with gr.Row(equal_height=True, elem_classes=["rating-row"]):
            note = gr.Textbox(value=(rating or {}).get("note", ""), placeholder="A note (optional)", show_label=False,
                              container=False, scale=3, min_width=100, max_length=500)  # fmt: skip
            for verdict, mark in (("good", "👍"), ("bad", "👎")):
                chosen = (rating or {}).get("verdict") == verdict
                button = gr.Button(mark, size="sm", scale=0, min_width=44, variant="primary" if chosen else "secondary",
                                   elem_classes=["rate-" + verdict])  # fmt: skip
                button.click(self.rate_handler(k, t, verdict), [self.last_result, note], self.last_result, **PRIVATE)

    def rate_handler(self, k: int, t: int, verdict: str):
        def handler(last: dict, note: str, request: gr.Request) -> dict:
            return self.rated(last, k, t, verdict, note, request.session_hash)

        return handler

    def rated(self, last: dict, k: int, t: int, verdict: str, note: str, session: str | None = None) -> dict:
        if session in self.redoing:
            gr.Warning(self.BUSY)
            return gr.update()
        turn = last["turns"][k]
        try:
            rating = Rating(last["run"], turn["index"] + 1, turn["takes"][t]["label"], turn["speaker"], turn["text"],
                            turn["seed"], verdict, note, model=self.studio.description)  # fmt: skip
            self.ratings.add(rating, take_path(last, k, t))
        except Exception as e:
            gr.Warning(user_message(e))
            return gr.update()
        label = f"take {turn['order'].index(t) + 1}" if turn["blind"] else f"take {turn['takes'][t]['label']}"
        gr.Info(f"Rated turn {turn['index'] + 1} {label} {verdict}: it is in the ratings table.")
        return rate(last, k, t, verdict, rating.note)

    # -- redo ------------------------------------------------------------------------------------

    def redo_button(self, label: str, k: int, same_seed: bool) -> None:
        self.wire_redo(gr.Button(label, size="sm", elem_classes=["redo-turn"]), k, same_seed, rest=False)

    def redo_rest_button(self, k: int) -> None:
        button = gr.Button(f"⏩ Redo the rest (turns {k + 1} on)", size="sm", variant="primary",
                           elem_classes=["redo-rest"])  # fmt: skip
        self.wire_redo(button, k, same_seed=True, rest=True)

    def wire_redo(self, button: gr.Button, k: int, same_seed: bool, rest: bool) -> None:
        # A generator function with a typed request: gradio streams the former and injects the latter.
        def handler(data: dict, request: gr.Request):
            yield from self.redo(data, request, k, same_seed, rest)

        inputs = self.request_inputs | {self.last_result}
        run = button.click(self.arm_redo, None, self.compose.generate, **UI_ONLY).then(
            handler, inputs, self.generation_outputs, **ONE_AT_A_TIME, **PRIVATE
        )  # fmt: skip
        self.give_generate_back(run)

    def arm_redo(self, request: gr.Request) -> dict:
        """At a Redo's click: from now until it is done, a Keep or a rating would be undone by its result, and
        Generate is busy (a run queued behind the redo would start after a Stop meant for both)."""
        self.arm(request)
        self.redoing.add(request.session_hash)
        return generate_busy()

    def redo_job(self, data: dict, k: int, same_seed: bool, rest: bool, session: str) -> Job:
        """Turn k (and with `rest` the turns after it) in the context of the voices, the conversation and
        the kept takes of the turns before it; the current settings, the turn's seed or a new one."""
        c, last = self.compose, data[self.last_result]
        turns = last["turns"]
        lines = [Line(t["speaker"], t["text"]) for t in (turns[k:] if rest else turns[k : k + 1])]
        # As the run heard them: its conversation, then the kept takes before turn k. A turn without audio,
        # cut by Stop or under half a second (not a clip the checks take) was not, or cannot be, context.
        before = [{"path": kept(t)["path"], "text": t["text"], "speaker": t["speaker"]} for t in turns[:k]
                  if not t["stopped"] and kept(t)["seconds"] >= MIN_CLIP_S]  # fmt: skip
        context = [*last.get("context", []), *before]
        temperature, topk, max_seconds, _ = c.settings(data)
        seed = turns[k]["seed"] if same_seed else -1
        job = self.studio.prepare(
            lines, self.voices(data), ([t["path"] for t in context], [t["text"] for t in context],
                                       [t["speaker"] for t in context]),
            (temperature, topk, max_seconds, seed), note_unused_voices=False, session=session,
            takes=data[c.takes], first_turn=turns[k]["index"],
        )  # fmt: skip
        # In the run's own chunks, so that its bundle reproduces: each chunk is watermarked on its own.
        return replace(job, first_chunk_frames=last.get("first_chunk_frames", job.first_chunk_frames))

    def redo(self, data: dict, request: gr.Request, k: int, same_seed: bool, rest: bool):
        last, blind = data[self.last_result], data[self.compose.blind]
        what = f"turns {k + 1} to {len(last['turns'])}" if rest else f"turn {k + 1}"
        try:
            yield from self.run_on_page(
                request,
                lambda: self.redo_job(data, k, same_seed, rest, request.session_hash),
                lambda job: f"*Making {what} again…*",
                lambda job, result: (replace_turns(last, result, blind),),
                blind,
            )
        finally:
            self.redoing.discard(request.session_hash)
