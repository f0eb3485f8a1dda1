"""Ratings: an evaluator's judgement of a turn or a take (good or bad, and a note), kept as a table.

Every rating is appended to a CSV with gradio's flagging callback (gr.CSVLogger), the rated audio
copied next to it, so an evaluation run leaves a table behind. With `--ratings-dataset` the folder is
also pushed to a Hub dataset every few minutes (huggingface_hub's CommitScheduler). Nothing is logged
but what the page knows of the turn and what the evaluator typed: no user name, address or session id.
"""

from __future__ import annotations

import logging
import shutil
import threading
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import gradio as gr

from studio.errors import InputError

log = logging.getLogger("csm-studio")

VERDICTS = ("good", "bad")
MAX_NOTE_CHARS = 500
DEFAULT_RATINGS_DIR = Path("ratings")
PUSH_EVERY_MINUTES = 5


@dataclass
class Rating:
    run: str  # the result's folder name: which generation
    turn: int  # 1-based, as the page shows it
    take: str  # "A" to "D"; "A" when one take was made
    speaker: int
    text: str
    seed: int
    verdict: str  # "good" or "bad"
    note: str = ""
    model: str = ""
    audio: str = ""  # the rated clip, copied into the ratings folder (relative to it)

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise InputError(f"A rating is “good” or “bad”, got {self.verdict!r}.")
        self.note = " ".join(str(self.note or "").split())
        if len(self.note) > MAX_NOTE_CHARS:
            raise InputError(f"The note is {len(self.note):,} characters long; at most {MAX_NOTE_CHARS} are kept.")


FIELDS = list(Rating.__dataclass_fields__)


class RatingLog:
    """The ratings table: a CSV in `folder` (made on the first rating), and optionally a Hub dataset."""

    def __init__(self, folder: Path = DEFAULT_RATINGS_DIR, dataset: str | None = None):
        self.folder = Path(folder)
        self.dataset = dataset
        self._logger: gr.CSVLogger | None = None
        self._lock = threading.Lock()
        self._scheduler = None
        # Made now, not in an event handler: gradio takes a component made inside one for an update.
        self._columns = [gr.Textbox(label=name, render=False) for name in FIELDS]

    @property
    def table(self) -> Path:
        return self.folder / "ratings.csv"

    def _setup(self) -> gr.CSVLogger:
        """On the first rating: the folder, the logger (one text column per field), the Hub push."""
        self.folder.mkdir(parents=True, exist_ok=True)
        logger = gr.CSVLogger(dataset_file_name=self.table.name, verbose=False)
        logger.setup(self._columns, self.folder)
        if self.dataset:
            from huggingface_hub import CommitScheduler

            self._scheduler = CommitScheduler(repo_id=self.dataset, repo_type="dataset", folder_path=self.folder,
                                              every=PUSH_EVERY_MINUTES, private=True)  # fmt: skip
            log.info("Ratings are pushed to the Hub dataset %s every %d minutes", self.dataset, PUSH_EVERY_MINUTES)
        return logger

    def add(self, rating: Rating, audio_path=None) -> int:
        """Append one rating (its audio copied in); the table's row count after it."""
        with self._lock:
            if self._logger is None:
                self._logger = self._setup()
            if audio_path and Path(audio_path).is_file():
                clips = self.folder / "audio"
                clips.mkdir(exist_ok=True)
                name = f"{uuid.uuid4().hex[:10]}-{Path(audio_path).name}"
                shutil.copyfile(audio_path, clips / name)
                rating.audio = f"audio/{name}"
            row = [str(value) for value in asdict(rating).values()]
            if self._scheduler is not None:
                with self._scheduler.lock:  # not while a push reads the folder
                    return self._logger.flag(row)
            return self._logger.flag(row)
