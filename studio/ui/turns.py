"""The result's turns as the page keeps them (a gr.State): each turn's takes, which one is kept, ratings,
and which turns were made with an older version of an earlier turn. Pure functions, and the rows.

A turn holds 1 to 4 takes; the kept one (A at first) continues the conversation and goes into the
stitched conversation. Keeping another take of turn k, or redoing it, leaves the later turns as they
are but marks them as made with the old turn k, until "Redo the rest" makes them again.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import gradio as gr
import soundfile as sf

from csm.audio import save_wav
from studio.inputs import SAMPLE_RATE
from studio.jobs import TAKE_LABELS, TurnReport, with_speed
from studio.outputs import neutral_link, new_output_dir, stitch
from studio.report import Result
from studio.ui.conversation import new_turn
from studio.ui.style import COMPACT_PLAYER


def turn_entry(result: Result, i: int, blind: bool) -> dict:
    report = result.turns[i]
    paths = result.take_paths[i] if result.take_paths else [result.turn_paths[i]]
    summaries = report.takes or [{"frames": report.frames, "seconds": report.seconds,
                                  "ended_by_model": report.ended_by_model}]  # fmt: skip
    takes = [
        {
            "label": TAKE_LABELS[t],
            "path": str(path),
            "seconds": s["seconds"],
            "frames": s["frames"],
            "ended_by_model": s["ended_by_model"],
            "rating": None,
        }  # fmt: skip
        for t, (path, s) in enumerate(zip(paths, summaries))
    ]
    order = list(range(len(takes)))
    if blind and len(takes) > 1:
        random.shuffle(order)
    return {"index": report.index, "speaker": report.speaker, "text": report.text, "voice": report.voice,
            "seed": report.seed, "stopped": report.stopped, "kept": 0, "takes": takes, "order": order,
            "blind": blind and len(takes) > 1, "stale": None}  # fmt: skip


def results_state(result: Result, blind: bool = False, context: list | None = None) -> dict:
    """A finished run as the page keeps it; `context`: the conversation it heard (the page's turns then),
    which a Redo of one of its turns hears again."""
    turns = [turn_entry(result, i, blind) for i in range(len(result.turns))]
    script = result.planned_turns > 1 or bool(turns and turns[0]["index"] > 0)
    return {"seed": result.seed, "run": result.audio_path.parent.name if result.audio_path else "", "turns": turns,
            "script": script, "conversation": str(result.audio_path) if result.audio_path else None,
            "context": list(context or [])}  # fmt: skip


def hides_takes(job, blind: bool) -> bool:
    """Blind takes of a job (`studio.jobs.Job`): the live player would play take A as it comes, and so tell
    it from the others, so it stays silent."""
    return blind and job.takes > 1


def blind_note(job, blind: bool) -> str:
    """What the status line adds while blind takes are made."""
    return " Blind: the takes come side by side, unlabelled, once all are made." if hides_takes(job, blind) else ""


def waiting_turns(state: dict) -> int:
    """Blind turns with no take chosen yet. Their kept take is still A, so the stitched conversation and the
    report's lengths and endings (A's) would tell it from the others: both wait until every one is chosen."""
    return sum(t["blind"] for t in (state or {}).get("turns", []))


def shown_conversation(state: dict) -> str | None:
    """What the Result player holds: the stitched conversation, or nothing while blind turns wait."""
    return None if waiting_turns(state) else state["conversation"]


def with_report(state: dict, result: Result) -> dict:
    """The state of a shown result, which keeps its report: a Keep writes it again, of the kept takes (a
    blind result's is withheld until then)."""
    return {**state, "report": result}


def with_kept_takes(result: Result, state: dict) -> Result:
    """The result as its kept takes make it: a turn that kept another take than A has that take's length,
    frames and ending (and speed, from them), and the audio's total length follows."""
    chosen = {t["index"]: kept(t) for t in state["turns"] if t["kept"]}
    if not any(r.index in chosen for r in result.turns):
        return result
    turns = [as_take(r, chosen[r.index]) if r.index in chosen else r for r in result.turns]
    seconds = result.seconds + sum(new.seconds - old.seconds for new, old in zip(turns, result.turns))
    return replace(result, turns=turns, seconds=seconds)


def as_take(report: TurnReport, take: dict) -> TurnReport:
    """A turn's report (take A's figures) with another take's: its speed comes from its own length."""
    figures = {key: take[key] for key in ("frames", "seconds", "ended_by_model")}
    return with_speed(replace(report, **figures))


def kept(turn: dict) -> dict:
    return turn["takes"][turn["kept"]]


def spoken_turns(state: dict) -> list[dict]:
    """The finished turns (their kept takes) as conversation turns; a turn cut by Stop is not offered,
    as its transcript runs past its audio."""
    return [new_turn(kept(t)["path"], t["text"], t["speaker"], kept(t)["seconds"], t["voice"])
            for t in (state or {}).get("turns", []) if kept(t)["frames"] and not t["stopped"]]  # fmt: skip


def restitched(state: dict) -> dict:
    """The state with a new stitched conversation of the kept takes (a script's; a line is its take)."""
    turns = state["turns"]
    if not state["script"]:
        return {**state, "conversation": kept(turns[0])["path"]}
    audio = stitch([sf.read(kept(t)["path"], dtype="float32")[0] for t in turns])
    path = new_output_dir() / "conversation.wav"
    save_wav(path, audio, SAMPLE_RATE)
    return {**state, "conversation": str(path)}


def with_later_turns_stale(turns: list[dict], k: int) -> list[dict]:
    """Turns after k are now made with an older turn k: marked, unless already marked for an earlier one."""
    return [dict(t, stale=t["stale"] or k + 1) if i > k else t for i, t in enumerate(turns)]


def keep_take(state: dict, k: int, take: int) -> dict:
    turns = [dict(t) for t in state["turns"]]
    if turns[k]["kept"] == take and not turns[k]["blind"]:
        return state
    turns[k].update(kept=take, blind=False)  # a choice reveals which take is which
    if take != state["turns"][k]["kept"]:
        turns = with_later_turns_stale(turns, k)
    return restitched({**state, "turns": turns})


def replace_turns(state: dict, redone: Result, blind: bool) -> dict:
    """The state with the turns a redo made in place of the old ones; the turns after them are stale."""
    new = results_state(redone, blind)["turns"]
    first = new[0]["index"]
    turns = state["turns"][:first] + new + state["turns"][first + len(new) :]
    turns = with_later_turns_stale(turns, first) if first + len(new) < len(turns) else turns
    # The turns made now are fresh; after "Redo the rest" that is all of them, unless it was stopped.
    turns = [dict(t, stale=None) if first <= i < first + len(new) else t for i, t in enumerate(turns)]
    return restitched({**state, "turns": turns})


def rate(state: dict, k: int, take: int, verdict: str, note: str) -> dict:
    turns = [dict(t) for t in state["turns"]]
    takes = [dict(x) for x in turns[k]["takes"]]
    takes[take]["rating"] = {"verdict": verdict, "note": note}
    turns[k]["takes"] = takes
    return {**state, "turns": turns}


def take_caption(take: dict) -> str:
    end = "ended by the model" if take["ended_by_model"] else "length limit"
    return f"{take['seconds']:.1f} s · {end}"


def show_turns(state: dict, events) -> None:
    """The result's turns (inside a gr.render): each take with its player, Keep, and a rating; Redo per turn.
    `events` is the page's TakeEvents: it wires the buttons."""
    turns = (state or {}).get("turns", [])
    if not turns or (not state["script"] and len(turns[0]["takes"]) == 1 and not events.rating_on):
        return
    for k, turn in enumerate(turns):
        with gr.Group(elem_id=f"result-turn-{k}", elem_classes=["result-turn"]):
            voice = f" · {turn['voice']}" if turn["voice"] else ""
            stale = f" · ⚠️ made with the old turn {turn['stale']}" if turn["stale"] else ""
            gr.Markdown(f"**Turn {turn['index'] + 1}** · speaker {turn['speaker']}{voice}{stale}<br>“{turn['text']}”",
                        elem_classes=["result-turn-head"], padding=True)  # fmt: skip
            with gr.Row(equal_height=True):
                for place, t in enumerate(turn["order"]):
                    show_take(turn, k, t, place, events, single=len(turn["takes"]) == 1 and not state["script"])
            if state["script"]:
                with gr.Row():
                    events.redo_button("🔁 Redo (new seed)", k, same_seed=False)
                    events.redo_button(f"🔁 Redo (seed {turn['seed']}, current settings)", k, same_seed=True)
                    if turn["stale"] and (k == 0 or not turns[k - 1]["stale"]):
                        events.redo_rest_button(k)


def show_take(turn: dict, k: int, t: int, place: int, events, single: bool) -> None:
    take = turn["takes"][t]
    label = f"Take {place + 1}" if turn["blind"] else take["label"]
    chosen = turn["kept"] == t and not turn["blind"] and len(turn["takes"]) > 1
    with gr.Column(min_width=160, elem_classes=["result-take"] + (["kept-take"] if chosen else [])):
        if not single:
            caption = "" if turn["blind"] else f" · {take_caption(take)}"
            gr.Markdown(f"**{label}**{caption}{' · ✓ kept' if chosen else ''}", padding=False)
            path = neutral_link(take["path"]) if turn["blind"] else take["path"]  # its name would say which take
            gr.Audio(path, show_label=False, interactive=False, buttons=["download"], container=False,
                     waveform_options=COMPACT_PLAYER)  # fmt: skip
        if len(turn["takes"]) > 1 and not chosen:
            events.keep_button(k, t)
        events.rating_row(turn, k, t)


def take_path(state: dict, k: int, t: int) -> Path:
    return Path(state["turns"][k]["takes"][t]["path"])
