"""LPCVC-style timed evaluation of submissions: harness, metrics, scoring, isolation, queue, leaderboard.

The contract between the modules is `types.py`; docs/eval.md describes the behaviour.
"""
