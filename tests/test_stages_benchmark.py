"""``benchmarks.stages``: every stage of an update timed for vmapped seeds, and its table."""

from __future__ import annotations

import math

from conftest import TINY

from benchmarks import stages
from purejaxppo import PPOConfig


def test_every_stage_is_timed_and_tabled():
    config = PPOConfig(**TINY)
    rows = stages.measure(config, seeds=2, updates=2, repeats=1)
    assert [r["stage"] for r in rows] == list(stages.STAGES)
    for r in rows:
        assert r["seeds"] == 2 and r["ms_per_update"] > 0 and math.isfinite(r["ms_per_update"])
        steps_per_s = 2 * config.batch_size / (r["ms_per_update"] / 1e3)
        assert math.isclose(r["env_steps_per_s"], steps_per_s, rel_tol=1e-3)
    table = stages.markdown(rows, config)
    assert table.count("| 2 |") == 1 and table.count("k)") == len(stages.STAGES)
