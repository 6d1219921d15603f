"""A live progress bar fed from inside the jitted training program by a host callback."""

from __future__ import annotations

import time
from typing import IO

from tqdm import tqdm

REPORTS_PER_RUN = 100
"""About this many callbacks per run: each costs a device-to-host sync, so not one per update."""


def report_every(num_updates: int) -> int:
    """The program calls back every this many updates (and after the last)."""
    return max(1, num_updates // REPORTS_PER_RUN)


class ProgressBar:
    """Updates done / total, environment steps per second and the mean return over seeds.

    Call :meth:`start` when the compiled program starts running (so compile time does not count
    against steps/s); the program then calls the object with ``(update, mean_return)``.
    """

    def __init__(self, total: int, done: int, steps_per_update: int, file: IO[str]) -> None:
        self._total, self._done, self._steps, self._file = total, done, steps_per_update, file
        self._bar: tqdm | None = None
        self._t0 = time.perf_counter()

    def start(self) -> None:
        """Shows the bar; call when the compiled program starts (compiling is not counted)."""
        self._bar = tqdm(total=self._total, initial=self._done, unit="update", file=self._file,
                         dynamic_ncols=True, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} "
                         "updates [{elapsed}<{remaining}{postfix}]")
        self._t0 = time.perf_counter()

    def __call__(self, update, mean_return) -> None:
        if self._bar is None:
            return
        update = int(update)
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        sps = (update - self._done) * self._steps / elapsed
        self._bar.set_postfix_str(f"{sps:,.0f} steps/s, return {float(mean_return):.1f}",
                                  refresh=False)
        self._bar.update(update - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
