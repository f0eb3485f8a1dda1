"""The watermark's cost bench (bench/watermark.py) runs end to end in its small form. Timings are not tests."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_watermark_bench_reports_its_cost(tmp_path):
    out = tmp_path / "watermark.json"
    command = [sys.executable, "-m", "bench.watermark", "--small", "--device", "cpu", "--seconds", "2",
               "--repeats", "1", "--json", str(out)]  # fmt: skip
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    assert result["seconds_per_audio_second"] > 0 and result["first_chunk_s"] > 0
    assert result["chunks"] == 1 + 3  # 2 s (25 frames): a first chunk of 1 frame (0.08 s), then chunks of 8 (0.64 s)
    assert "s per second of audio" in run.stdout
