"""What a finished request reports: its files, its turns, and one summary of what went wrong."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from studio.inputs import SAMPLE_RATE, TURN_GAP_S
from studio.jobs import TurnReport


@dataclass
class Result:
    """A finished (or stopped) request: the files written and what happened."""

    audio_path: Path | None  # the utterance, or the stitched conversation; None if nothing was generated
    turn_paths: list[Path]
    turns: list[TurnReport]
    planned_turns: int
    seed: int
    seconds: float
    elapsed_s: float
    warnings: list[str]
    stopped: bool = False  # by the user's Stop
    error: str | None = None  # a failure that ended the job after some audio: what came before is kept
    take_paths: list[list[Path]] = field(default_factory=list)  # with several takes: each turn's, A first
    transcripts: list[dict] = field(default_factory=list)  # per voice prompt and context clip: clip, text, automatic

    def info(self, model: str) -> dict:
        return {
            "seed": self.seed,
            "seconds": round(self.seconds, 3),
            "sample_rate": SAMPLE_RATE,
            # A script's turns are joined TURN_GAP_S apart (a redo from turn k > 1 too: after the given ones).
            "gap_seconds": TURN_GAP_S if self.planned_turns > 1 or (self.turns and self.turns[0].index) else 0.0,
            "turns": [self.turn_info(i) for i in range(len(self.turns))],
            "warnings": self.warnings,
            "transcripts": self.transcripts,
            "elapsed_seconds": round(self.elapsed_s, 3),
            "model": model,
        }

    def turn_info(self, i: int) -> dict:
        """A turn's report; with several takes, each take's file name beside its figures."""
        info = asdict(self.turns[i])
        if self.take_paths:
            for take, path in zip(info["takes"], self.take_paths[i]):
                take["file"] = path.name
        return info


def numbers(values: list[int]) -> str:
    """[3] -> "3"; [5, 6, 7] -> "5–7"; [2, 4, 5] -> "2, 4 and 5"."""
    if len(values) > 2 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}–{values[-1]}"
    text = [str(v) for v in values]
    return text[0] if len(text) == 1 else ", ".join(text[:-1]) + " and " + text[-1]


def turns_phrase(indices: list[int], total: int) -> str:
    """How a message names some turns of a request: "the turn", "turn 3", "turns 5–17"."""
    if total == 1:
        return "the turn"
    return f"turn {numbers(indices)}" if len(indices) == 1 else f"turns {numbers(indices)}"


def result_warnings(reports: list[TurnReport], planned_turns: int) -> list[str]:
    """One warning per kind of problem for the whole request, however many turns it touched."""
    warnings = []
    cut = [r for r in reports if r.dropped_context]
    if len(cut) == 1:
        warnings.append(
            f"The model's window was full, so {turns_phrase([cut[0].index + 1], planned_turns)} was generated "
            f"without {', '.join(cut[0].dropped_context)} (the oldest context goes first, the speaker prompts last)."
        )
    elif cut:
        first_without = {}  # each left-out piece, and the first turn generated without it
        for r in cut:
            for label in r.dropped_context:
                first_without.setdefault(label, r.index + 1)
        pieces = ", ".join(f"{label} from turn {turn} on" for label, turn in first_without.items())
        warnings.append(
            f"The model's window was full, so {turns_phrase([r.index + 1 for r in cut], planned_turns)} were "
            f"generated without some of the context (the oldest goes first, the speaker prompts last): {pieces}."
        )
    silent = [r.index + 1 for r in reports if r.frames == 0 and not r.stopped]
    if silent:
        which = turns_phrase(silent, planned_turns)
        warnings.append(f"The model ended {which} at once, with no audio: try another seed or rephrase.")
    return warnings
