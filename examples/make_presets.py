"""Rebuild the shipped preset voices: synthetic espeak-ng clips, 24 kHz mono 16-bit WAV.

They are stand-ins so the demo works offline and without the gated sesame/csm-1b prompts; they
are robotic, and CSM imitates what it is given, so real recordings give far better results.

    apt-get install -y espeak-ng      # a development tool only; the app never runs it
    python examples/make_presets.py   # rewrites the WAVs listed in examples/presets.json

Each preset in presets.json carries the espeak-ng settings it was made with (`espeak`), and its
transcript is exactly the text spoken.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from csm.audio import load_audio, save_wav, to_mono  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent
SAMPLE_RATE = 24_000
PEAK = 0.7  # leave headroom, and make the voices equally loud
EDGE_SILENCE_S = 0.15  # espeak-ng pads generously; keep a short, even margin


def synthesize(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(raw), text],
                       check=True)  # fmt: skip
        samples, rate = load_audio(raw)
    audio = to_mono(samples, rate, SAMPLE_RATE).numpy()
    return trim_silence(audio) / np.abs(audio).max() * PEAK


def trim_silence(audio: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    loud = np.flatnonzero(np.abs(audio) > threshold * np.abs(audio).max())
    margin = int(EDGE_SILENCE_S * SAMPLE_RATE)
    return audio[max(loud[0] - margin, 0) : loud[-1] + margin]


def main() -> None:
    manifest = json.loads((EXAMPLES / "presets.json").read_text())
    for preset in manifest["presets"]:
        settings = preset["espeak"]
        audio = synthesize(preset["transcript"], settings["voice"], settings["speed"], settings["pitch"])
        path = EXAMPLES / preset["file"]
        save_wav(path, audio, SAMPLE_RATE)
        print(f"{path.name}: {len(audio) / SAMPLE_RATE:.2f} s, {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
