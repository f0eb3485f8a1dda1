"""What a copied link may name: only a session bundle the app wrote, never another file of the server's."""

from __future__ import annotations

import pytest

from studio.outputs import OUTPUT_DIR, new_output_dir
from studio.ui.share import bundle_of_token, bundle_token


def test_a_link_names_a_bundle_of_the_apps_own_and_nothing_else(tmp_path):
    folder = new_output_dir()
    bundle = folder / "csm-studio-session-20261126-101500.zip"
    bundle.write_bytes(b"PK")
    token = bundle_token(bundle)
    assert token == f"{folder.name}/{bundle.name}" and bundle_of_token(token) == bundle.resolve()
    (folder / "turn-01-speaker0.wav").write_bytes(b"RIFF")
    outside = tmp_path / "csm-studio-session-20261126-101500.zip"
    outside.write_bytes(b"PK")
    for hostile in [
        f"{folder.name}/turn-01-speaker0.wav",  # a file of the app's, but not a bundle
        f"../{folder.name}/{bundle.name}",
        str(bundle),  # a server path
        str(outside),
        f"{folder.name}/../{folder.name}/{bundle.name}",
        f"{folder.name}/csm-studio-session-20261126-999999.zip",  # well formed, but no such bundle
        "",
        None,
        {"path": str(bundle)},
    ]:
        assert bundle_of_token(hostile) is None, hostile
    assert bundle.resolve().is_relative_to(OUTPUT_DIR.resolve())


@pytest.mark.parametrize("token", ["run-1/x.zip", "run-20261126-101500-abcdef12/csm-studio-session-1.zip\n"])
def test_malformed_tokens_are_refused(token):
    assert bundle_of_token(token) is None


def test_an_opened_bundles_takes_each_say_how_they_ended(tmp_path):
    """Each take ends on its own: one kept take that the model ended must not make the others 'ended by the model'."""
    import numpy as np
    import soundfile as sf

    from studio.sessions import session_turn
    from studio.ui.share import turn_state_of

    paths = [tmp_path / f"take-{i}.wav" for i in range(3)]
    for i, path in enumerate(paths):
        sf.write(path, np.zeros(1920 * (i + 1), np.float32), 24_000, subtype="PCM_16")
    manifest_turn = {"speaker": 0, "text": "Hi.", "seed": 5, "takes": [
        {"seed": 5, "file": "a.wav", "kept": False, "report": {"ended_by_model": False}},
        {"seed": 5, "file": "b.wav", "kept": True, "report": {"ended_by_model": True}},
        {"seed": 5, "file": "c.wav", "kept": False},  # a take from before takes had reports: the turn's
    ]}  # fmt: skip
    turn = session_turn(0, manifest_turn, {"a.wav": str(paths[0]), "b.wav": str(paths[1]), "c.wav": str(paths[2])})
    assert [t.ended_by_model for t in turn.takes] == [False, True, None] and turn.report["ended_by_model"] is True
    state = turn_state_of(turn)
    assert [t["ended_by_model"] for t in state["takes"]] == [False, True, True] and state["kept"] == 1
    assert [t["frames"] for t in state["takes"]] == [1, 2, 3]


def test_the_pages_takes_carry_how_each_ended_into_a_bundle():
    """A redone take is not one of the run's files, so the run has no report of it: the page passes on how it ended."""
    from studio.ui.share import extra_of

    state = {"turns": [{"seed": 7, "kept": 1, "takes": [
        {"path": "/a.wav", "rating": None, "ended_by_model": True},
        {"path": "/b.wav", "rating": None, "ended_by_model": False},
    ]}]}  # fmt: skip
    takes = extra_of(state, "[0] Hi.")["takes"][0]
    assert [(t["kept"], t["ended_by_model"]) for t in takes] == [(False, True), (True, False)]


@pytest.mark.parametrize(
    ("quantize", "said"), [(None, "with tiny."), ("int8-dynamic", "with tiny, quantized int8-dynamic.")]
)
def test_an_opened_session_names_its_model_and_its_int8_mode(quantize, said):
    from studio.sessions import Session
    from studio.ui.share_events import opened_note

    session = Session(folder="", model={"id": "tiny", "quantize": quantize}, app={}, created="2026-11-26T12:00:00Z",
                      voices=[], context=[], script=[], script_text="", settings={}, turns=[], timings={}, status={})  # fmt: skip
    assert opened_note(session) == f"📂 Opened a session made 2026-11-26T12:00:00Z {said}"


def test_a_reopened_turn_that_was_redone_offers_to_redo_with_the_redos_seed(tmp_path):
    """After a Redo with a new seed, the page's turn (and its "Redo (seed …)") has the redo's seed; opened from a
    bundle, it must too, though the manifest's turn seed stays the run's (reproduce generates from it)."""
    import numpy as np
    import soundfile as sf

    from studio.sessions import session_turn
    from studio.ui.share import turn_state_of

    path = tmp_path / "take.wav"
    sf.write(path, np.zeros(1920, np.float32), 24_000, subtype="PCM_16")
    redone = {"speaker": 0, "text": "Hi.", "seed": 5, "takes": [{"seed": 9, "file": "a.wav", "kept": True}]}
    assert turn_state_of(session_turn(0, redone, {"a.wav": str(path)}))["seed"] == 9
    as_run = {"speaker": 0, "text": "Hi.", "seed": 5, "takes": [{"seed": 5, "file": "a.wav", "kept": True}]}
    assert turn_state_of(session_turn(0, as_run, {"a.wav": str(path)}))["seed"] == 5
