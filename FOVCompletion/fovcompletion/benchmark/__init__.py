"""Benchmark: completion quality and speed against baselines and the reference sampler (issue 5).

`fovcompletion benchmark` hides one end of held-out scans (and whole regions of phantoms), completes it with
every method on the same cases, and writes results.json, results.md and two figures.
"""
