"""Benchmarks: `python -m bench.bench` (ours next to transformers' CSM), `python -m bench.profile_frame`."""
