"""agentlog's benchmark suite (``make bench``): the platform against the machine and its peers.

Every section measures one figure family and returns flat figures; :mod:`bench.cli` runs the
sections, prints them against their goals and writes ``bench/results/<date>-<machine>.json``.
Peers (LangGraph, DBOS) live in their own virtualenv (``.venv-peers``) so their dependencies never
touch the platform's; they are run as subprocesses from :mod:`bench.peers`.
"""
