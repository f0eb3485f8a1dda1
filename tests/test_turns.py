"""The result's turns as the page keeps them: keeping a take, redoing a turn or the rest, the stale marks."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import soundfile as sf

from studio.jobs import TurnReport
from studio.report import Result
from studio.ui.turns import blind_note, hides_takes, keep_take, replace_turns, results_state, spoken_turns

RATE = 24_000


def result(folder, texts: list[str], first: int = 0, takes: int = 2, seed: int = 10, stopped_last=False) -> Result:
    """A run of `texts` from turn `first`, each turn with `takes` takes of distinct constant audio."""
    reports, take_paths = [], []
    for i, text in enumerate(texts):
        index = first + i
        paths = []
        for t in range(takes):
            path = folder / f"turn{index}-{t}-{seed}.wav"
            sf.write(path, np.full(RATE // 2, 0.01 * (index + 1) + 0.001 * t, np.float32), RATE)
            paths.append(path)
        summaries = [{"take": "AB"[t], "frames": 6, "seconds": 0.5, "ended_by_model": True} for t in range(takes)]
        stopped = stopped_last and i == len(texts) - 1
        reports.append(TurnReport(index, index % 2, text, seed + i, 6, 0.5, True, takes=summaries, stopped=stopped))
        take_paths.append(paths)
    return Result(folder / "conversation.wav", [p[0] for p in take_paths], reports, len(texts), seed, 1.0, 1.0, [],
                  take_paths=take_paths)  # fmt: skip


def test_keeping_another_take_marks_the_later_turns_and_restitches(tmp_path):
    state = results_state(result(tmp_path, ["One.", "Two.", "Three."]), context=[{"path": "c.wav"}])
    assert state["context"] == [{"path": "c.wav"}] and [t["kept"] for t in state["turns"]] == [0, 0, 0]
    kept = keep_take(state, 0, 1)
    assert [t["kept"] for t in kept["turns"]] == [1, 0, 0] and [t["stale"] for t in kept["turns"]] == [None, 1, 1]
    joined = sf.read(kept["conversation"], dtype="float32")[0]
    assert abs(joined[0] - 0.011) < 1e-4  # take B of turn 1 now opens the conversation
    assert spoken_turns(kept)[0]["path"].endswith("turn0-1-10.wav")
    assert keep_take(kept, 0, 1) is kept  # keeping the kept take changes nothing


def test_a_redo_replaces_its_turn_and_redo_the_rest_clears_only_what_it_made(tmp_path):
    state = results_state(result(tmp_path, ["One.", "Two.", "Three.", "Four."]))
    redone = replace_turns(state, result(tmp_path, ["Two."], first=1, seed=99), blind=False)
    assert [t["seed"] for t in redone["turns"]] == [10, 99, 12, 13]
    assert [t["stale"] for t in redone["turns"]] == [None, None, 2, 2]
    assert redone["turns"][0] == state["turns"][0]  # the turn before it, untouched
    # "Redo the rest" stopped after one of its two turns: only that one is fresh.
    rest = replace_turns(redone, result(tmp_path, ["Three."], first=2, seed=50, stopped_last=False), blind=False)
    assert [t["stale"] for t in rest["turns"]] == [None, None, None, 2]
    done = replace_turns(rest, result(tmp_path, ["Four."], first=3, seed=51), blind=False)
    assert [t["stale"] for t in done["turns"]] == [None] * 4


def test_blind_takes_are_shuffled_and_revealed_by_a_choice(tmp_path):
    state = results_state(result(tmp_path, ["One."], takes=2), blind=True)
    turn = state["turns"][0]
    assert turn["blind"] and sorted(turn["order"]) == [0, 1]
    chosen = keep_take(state, 0, 1)["turns"][0]
    assert not chosen["blind"] and chosen["kept"] == 1


def test_blind_takes_are_not_streamed_into_the_live_player():
    """Streamed, the live player plays take A as it comes: that would tell it from the others."""
    one, four = SimpleNamespace(takes=1), SimpleNamespace(takes=4)
    assert hides_takes(four, blind=True) and blind_note(four, True).startswith(" Blind:")
    assert not hides_takes(four, blind=False) and blind_note(four, False) == ""
    assert not hides_takes(one, blind=True) and blind_note(one, True) == ""  # one take: nothing to tell apart
