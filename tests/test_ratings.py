"""Ratings go into a CSV table (gr.CSVLogger) with the rated audio beside it."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import soundfile as sf

from studio.errors import InputError
from studio.ratings import FIELDS, Rating, RatingLog


def test_ratings_are_appended_to_a_table_with_their_audio(tmp_path):
    clip = tmp_path / "turn-01-speaker0-river.wav"
    sf.write(clip, np.zeros(2400, np.float32), 24_000)
    ratings = RatingLog(tmp_path / "ratings")
    assert not ratings.table.exists()  # nothing until the first rating
    first = Rating("run-1", 1, "A", 0, "Hello, there.", 42, "good", "  clear,\n natural ", model="tiny")
    assert ratings.add(first, clip) == 1
    assert ratings.add(Rating("run-1", 2, "B", 1, "Hi!", 43, "bad", "robotic"), None) == 2
    with ratings.table.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [row["verdict"] for row in rows] == ["good", "bad"]
    assert rows[0]["note"] == "clear, natural" and rows[0]["text"] == "Hello, there." and rows[1]["take"] == "B"
    assert set(FIELDS) <= set(rows[0]) and "timestamp" in rows[0]
    assert (ratings.folder / rows[0]["audio"]).read_bytes() == clip.read_bytes() and rows[1]["audio"] == ""


@pytest.mark.parametrize(
    "changes, message", [({"verdict": "meh"}, "good” or “bad"), ({"note": "x" * 501}, "at most 500 are kept")]
)
def test_a_bad_rating_is_refused_with_a_reason(changes, message):
    fields = {"run": "r", "turn": 1, "take": "A", "speaker": 0, "text": "Hi", "seed": 1, "verdict": "good", **changes}
    with pytest.raises(InputError, match=message):
        Rating(**fields)
