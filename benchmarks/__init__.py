"""Benchmarks of purejaxppo: throughput, learning, policy losses, memory, gradient agreement, GPU.

Run each one from the repository root as a module, e.g. ``python -m benchmarks.throughput``
(``--help`` lists its flags). What they share is in :mod:`benchmarks.common`; where they write
(a temporary directory by default, ``benchmarks/results/`` with ``--record``) is described there.
"""
