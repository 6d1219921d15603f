"""A live progress bar, moved by the host between the chunks of the compiled training program."""

from __future__ import annotations

import shutil
import time
from typing import IO

from tqdm import tqdm


class ProgressBar:
    """Updates done / total, environment steps per second and the mean return over seeds.

    Call :meth:`start` when the compiled program starts running (so compile time does not count
    against steps/s), then call the object with ``(updates_done, mean_return)`` after each chunk.
    """

    def __init__(self, total: int, done: int, steps_per_update: int, file: IO[str]) -> None:
        self._total, self._done, self._steps, self._file = total, done, steps_per_update, file
        self._bar: tqdm | None = None
        self._t0 = time.perf_counter()

    def start(self) -> None:
        """Shows the bar; call when the compiled program starts (compiling is not counted)."""
        # A terminal that reports no size (some pseudo-terminals say 0x0) gets 80x24: tqdm
        # draws nothing on a screen it reads as having no rows.
        size = shutil.get_terminal_size((80, 24))
        self._bar = tqdm(total=self._total, initial=self._done, unit="update", file=self._file,
                         ncols=size.columns or 80, nrows=size.lines or 24,
                         bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} "
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
