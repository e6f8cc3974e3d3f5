"""Peer benchmark harness (issue #8): ours vs the real Triton 2.51 and MLServer 1.7, in one run.

`python -m benchmarks.peers` (or `make bench`); see `__main__.py` for flags and benchmarks/NOTES.md
for what the profiles say.
"""
