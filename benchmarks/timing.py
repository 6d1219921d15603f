"""Timing shared by the benchmark scripts: compile once, then time the compiled program."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from purejaxppo.parallel import compiler_options


class Timed(NamedTuple):
    """A program's output and how long it took."""

    result: Any
    """Output of the last run (blocked until ready)."""
    compile_s: float
    """``jax.jit(fn, compiler_options=compiler_options()).lower(*args).compile()``: tracing,
    lowering and XLA compilation, with the options the command line compiles with."""
    run_s: float
    """Best of ``repeats`` runs of the compiled program, each waited for."""


def compile_and_time(fn: Callable[..., Any], *args: Any, repeats: int = 1) -> Timed:
    """Compiles ``jax.jit(fn)`` for ``args`` (as the command line does) and runs it ``repeats``
    times."""
    start = time.perf_counter()
    compiled = jax.jit(fn, compiler_options=compiler_options()).lower(*args).compile()
    compile_s = time.perf_counter() - start
    run_s, result = float("inf"), None
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        result = jax.block_until_ready(compiled(*args))
        run_s = min(run_s, time.perf_counter() - start)
    return Timed(result, compile_s, run_s)
