"""Download, open, link and reproduce a session: a part of the Page (studio/ui/events.py), one concern."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import soundfile as sf

from studio.errors import InputError, user_message
from studio.inputs import SAMPLE_RATE
from studio.jobs import ONE_AT_A_TIME
from studio.manifest import check_manifest
from studio.reproduce import decoder_said, reproduce, said
from studio.sessions import Draft, Session, draft_bundle, open_session
from studio.ui.conversation import new_turn
from studio.ui.share import bundle_of_token, bundle_token, extra_of, page_state_of
from studio.ui.style import ADD_SPEAKER, COPY_LINK, MAX_CARDS, PRIVATE, REMOVE_SPEAKER, SHOWN_CARDS, shown_button
from studio.ui.voices import NO_VOICE, OWN_VOICE


class ShareEvents:
    """Mixed into the Page: it has studio, cards, compose, result, share, draft, last_result, turns_state, shown."""

    def wire_share(self, loaded) -> None:
        s = self.share
        s.make.click(self.make_bundle, [self.last_result, self.draft, self.compose.script], [s.bundle, s.token, s.link],
                     **PRIVATE)  # fmt: skip
        s.opened.upload(self.open_bundle, s.opened, self.restore_outputs, **PRIVATE)
        s.reproduce.click(self.reproduce_session, [s.opened, s.token], s.report, **ONE_AT_A_TIME, **PRIVATE)
        loaded.then(self.open_linked, s.token, self.restore_outputs, **PRIVATE)  # a copied link names a bundle

    def make_bundle(self, last: dict, draft, script: str) -> list:
        if draft is None or not (last or {}).get("turns"):
            gr.Warning("There is no result to bundle yet: generate first.")
            return [gr.update()] * 3
        try:
            path = draft_bundle(draft, extra_of(last, script))
        except Exception as e:  # a take's file gone (outputs expire after hours), mostly
            gr.Warning(user_message(e))
            return [gr.update()] * 3
        return [gr.update(value=str(path), visible=True), bundle_token(path), shown_button(COPY_LINK, True)]

    @property
    def restore_outputs(self) -> list:
        c, r = self.compose, self.result
        cards = [x for card in self.cards for x in (card.column, card.picker, card.own_audio, card.own_text)]
        return [self.shown, *cards, self.add_speaker, self.remove_speaker, c.mode, c.text, c.speaker, c.script,
                c.temperature, c.topk, c.max_seconds, c.seed, c.takes, self.turns_state, self.last_result, self.draft,
                r.audio, r.info, r.status, r.files, r.keep, r.use_row, r.use_turn]  # fmt: skip

    def open_linked(self, token) -> list:
        path = bundle_of_token(token)
        if token and path is None:
            gr.Warning("The session this link named is gone: links last as long as the app's files (6 hours).")
        return self.open_bundle(path) if path else [gr.update()] * len(self.restore_outputs)

    def open_bundle(self, path) -> list:
        """The page as the bundle left it: voices, conversation, script, settings, and the result's turns."""
        if not path:
            return [gr.update()] * len(self.restore_outputs)
        try:
            return self.restored(open_session(path))
        except Exception as e:  # refused by open_session, or clips it could not read back
            message = user_message(e)
            gr.Warning(message)
            return [gr.update()] * (len(self.restore_outputs) - 5) + [f"⚠️ {message}"] + [gr.update()] * 4

    def restored(self, session: Session) -> list:
        state = {**page_state_of(session), "context": self.conversation_of(session)}
        count = min(max([SHOWN_CARDS, *(v.speaker + 1 for v in session.voices)]), MAX_CARDS)
        files = [take["path"] for turn in state["turns"] for take in turn["takes"]]
        keep, use_row, use_turn = self.offer_turns(state)
        opened = opened_note(session)
        return [count, *self.cards_of(session, count), shown_button(ADD_SPEAKER, count < MAX_CARDS),
                shown_button(REMOVE_SPEAKER, count > SHOWN_CARDS), *self.compose_of(session), self.conversation_of(session),
                state, opened_draft(session), state["conversation"], opened, "",
                gr.update(value=files, visible=len(files) > 1), keep, use_row, use_turn]  # fmt: skip

    def cards_of(self, session: Session, count: int) -> list:
        voices, updates = {v.speaker: v for v in session.voices}, []
        for card in self.cards:
            voice = voices.get(card.speaker)
            if voice is None or (voice.preset and self.studio.presets.get(voice.preset) is None):
                if voice is not None:
                    gr.Warning(f"Speaker {card.speaker}'s preset voice ({voice.name or voice.preset}) is not offered "
                               "here: pick another.")  # fmt: skip
                choice, clip, text = NO_VOICE, None, ""
            elif voice.preset:
                choice, clip, text = voice.preset, gr.update(), gr.update()
            else:
                choice, clip, text = OWN_VOICE, voice.path, voice.transcript
            updates += [gr.update(visible=card.speaker < count), gr.update(value=choice), clip, text]
        return updates

    def compose_of(self, session: Session) -> list:
        s, script = session.settings, session.script
        one = len(script) == 1
        return ["One line" if one else "Script", script[0]["text"] if one else gr.update(),
                script[0]["speaker"] if one else gr.update(), session.script_text, s["temperature"], s["topk"],
                s["max_seconds"], s.get("seed") if s.get("seed") is not None else -1, s.get("takes") or 1]  # fmt: skip

    @staticmethod
    def conversation_of(session: Session) -> list:
        return [new_turn(c.path, c.text, c.speaker, sf.info(c.path).duration) for c in session.context]

    def reproduce_session(self, opened, token, request: gr.Request) -> str:
        path = opened or bundle_of_token(token)
        if not path:
            return "Open a session bundle (or make one) first, then reproduce it."
        try:
            done = reproduce(self.studio, path, request.session_hash)
        except (InputError, Exception) as e:
            return f"⚠️ {user_message(e)}"
        rows = ["| Turn | Same audio | Largest difference | Seconds |", "|---|---|---|---|"]
        for t in done.turns:
            diff = "–" if t.max_abs_diff is None else f"{t.max_abs_diff} (16-bit steps)"
            rows.append(f"| {t.turn} | {'✓ yes' if t.matched else '✗ no'} | {diff} | {t.samples / SAMPLE_RATE:.2f} |")
        verdict = "✓ Every turn came out the same." if done.all_matched else "✗ Not every turn came out the same."
        return "\n\n".join([f"**{verdict}**", "\n".join(rows), *[f"ℹ️ {note}" for note in done.notes]])


def opened_draft(session: Session) -> Draft:
    """An opened session's own draft: a bundle made from the page now holds this session, its files as opened."""
    return Draft(session.manifest, {name: Path(session.folder) / name for name in check_manifest(session.manifest)})


def opened_note(session: Session) -> str:
    """The banner over an opened session: when, and with which model (its int8 mode and a compiled decoder change
    the audio)."""
    quantized = session.model.get("quantize")
    model = said(session.model.get("id")) + (f", quantized {said(quantized)}" if quantized else "")
    model += decoder_said(session.model)
    return f"📂 Opened a session made {session.created or 'at an unknown time'} with {model}."
