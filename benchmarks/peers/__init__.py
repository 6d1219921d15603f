"""Peer PPO implementations, each run in its own virtualenv (see ``README.md`` here).

Only :mod:`benchmarks.peers.run` is imported by the benchmarks (standard library only); the peer
scripts run with their own virtualenv's python.
"""
