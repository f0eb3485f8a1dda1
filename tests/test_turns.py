"""The result's turns as the page keeps them: keeping a take, redoing a turn or the rest, the stale marks."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import soundfile as sf

from studio.jobs import TurnReport
from studio.report import Result
from studio.ui.result import describe_result, result_summary
from studio.ui.turns import (
    blind_note,
    hides_takes,
    keep_take,
    replace_turns,
    results_state,
    shown_conversation,
    spoken_turns,
    with_report,
)

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


def test_blind_takes_withhold_the_conversation_and_the_report_until_every_turn_is_kept(tmp_path):
    """The stitched conversation and the report are take A's: heard or read, they would tell it from the others."""
    run = result(tmp_path, ["One.", "Two."])
    for report in run.turns:
        report.takes[1].update(frames=3, seconds=0.24, ended_by_model=False)
    state = with_report(results_state(run, blind=True), run)
    assert shown_conversation(state) is None and state["conversation"]  # made, but not in the Result player
    summary = result_summary(run, state, "tiny")
    assert "Seed 10" in summary and "once a take of each of the 2 blind turns is kept" in summary
    assert not any(words in summary for words in ("of audio", "0.5", "ended by", "length limit", "RTF"))
    one = keep_take(state, 0, 1)
    assert shown_conversation(one) is None and "once a take is kept" in result_summary(run, one, "tiny")
    both = keep_take(one, 1, 0)
    assert shown_conversation(both) == both["conversation"]
    revealed = result_summary(run, both, "tiny")  # the kept takes' figures: B for turn 1, A for turn 2
    assert "0.74 s of audio" in revealed and "| 0.2&nbsp;s (length limit) |" in revealed
    assert "| 0.5&nbsp;s |" in revealed
    # A blind redo of turn 2 waits again, then says the redo's turn as kept.
    redo = result(tmp_path, ["Two."], first=1, seed=99)
    redo.turns[0].takes[1].update(frames=3, seconds=0.24, ended_by_model=False)
    redone = with_report(replace_turns(both, redo, blind=True), redo)
    assert shown_conversation(redone) is None and "once a take is kept" in result_summary(redo, redone, "tiny")
    redone_b = result_summary(redo, keep_take(redone, 1, 1), "tiny")
    assert "0.74 s of audio" in redone_b and "3 frames · stopped at the length limit" in redone_b


def test_the_conversation_and_report_are_shown_at_once_when_not_blind_or_one_take(tmp_path):
    for run, blind in ((result(tmp_path, ["One.", "Two."]), False), (result(tmp_path, ["One."], takes=1), True)):
        state = with_report(results_state(run, blind=blind), run)
        assert shown_conversation(state) == state["conversation"]
        assert result_summary(run, state, "tiny") == describe_result(run, "tiny")


def test_keeping_a_blind_take_fills_the_result_player_and_the_report(tmp_path):
    from studio.ui.takes_events import TakeEvents

    run = result(tmp_path, ["One."])
    run.turns[0].takes[1].update(frames=3, seconds=0.24, ended_by_model=False)
    state = with_report(results_state(run, blind=True), run)
    page = SimpleNamespace(redoing=set(), studio=SimpleNamespace(description="tiny"), offer_turns=lambda s: [1, 2, 3])
    page.kept_summary = lambda last: TakeEvents.kept_summary(page, last)
    last, audio, info, *offers = TakeEvents.kept_take(page, state, 0, 1)
    assert audio == last["conversation"] and "3 frames · stopped at the length limit" in info and offers == [1, 2, 3]


def test_a_blind_result_offers_no_add_or_use_as_voice_until_its_takes_are_kept(tmp_path):
    """Both would take each turn's take A into the conversation or a voice card, its length with it."""
    from studio.ui.events import Page

    run = result(tmp_path, ["One.", "Two."])
    state = results_state(run, blind=True)
    add, use_row, use_turn = Page.offer_turns(None, state)
    assert not add["visible"] and not use_row["visible"] and not use_turn["visible"]
    assert use_turn["choices"] == [] and use_turn["value"] is None  # 0 would not be among no choices: an error
    add, use_row, use_turn = Page.offer_turns(None, keep_take(keep_take(state, 0, 1), 1, 0))
    assert add["visible"] and use_row["visible"] and use_turn["visible"] and len(use_turn["choices"]) == 2


def test_keeping_another_take_when_not_blind_writes_the_report_of_that_take(tmp_path):
    """The Result player then holds the conversation with take B: the report must not still say A's length."""
    from studio.ui.takes_events import TakeEvents

    run = result(tmp_path, ["One."])
    run.turns[0].takes[1].update(frames=3, seconds=0.24, ended_by_model=False)
    state = with_report(results_state(run, blind=False), run)
    assert result_summary(run, state, "tiny") == describe_result(run, "tiny")
    page = SimpleNamespace(redoing=set(), studio=SimpleNamespace(description="tiny"), offer_turns=lambda s: [])
    page.kept_summary = lambda last: TakeEvents.kept_summary(page, last)
    last, audio, info = TakeEvents.kept_take(page, state, 0, 1)
    assert audio == last["conversation"] and "3 frames · stopped at the length limit" in info
    assert "3 frames" not in describe_result(run, "tiny")  # take A's report said otherwise
