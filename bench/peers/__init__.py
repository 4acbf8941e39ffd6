"""Peer implementations of the bench workload, each runnable as ``python -m bench.peers.<name>``.

They import only :mod:`bench.workload` and :mod:`bench.measure` from agentlog (both stdlib-only
apart from ``openai``), so they run from the peers' virtualenv.
"""
