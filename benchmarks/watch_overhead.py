"""What watching a run costs: chunked training and in-program evaluation, as run-time ratios.

    python -m benchmarks.watch_overhead [--rounds 5] [--record | --out DIR]

CartPole-v1's preset, 1 seed, as the command line trains it (``purejaxppo.app.experiment.train``,
compiled once before the timing). In alternating rounds, each setting's run time (compile
excluded):

* ``one chunk``: the whole run in one chunk (the program without the per-chunk host work);
* ``chunks of ~1 s``: the command line's default (progress, live metrics.csv, Ctrl-C);
* ``chunks + eval``: also ``eval_every=50``, ``eval_episodes=10`` (deterministic policy).

The table gives each setting's median and its median ratio to ``one chunk`` over the rounds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from benchmarks.common import (
    add_output_flags,
    output_dir,
    print_written,
    write_json,
    write_text,
)
from purejaxppo import PPOConfig
from purejaxppo.app import experiment
from purejaxppo.app.presets import RunOptions, get_preset

NAME = "watch_overhead"


def run_once(config: PPOConfig, chunk_seconds: float) -> float:
    """Run time (s) of one training of ``config``, compile excluded, with chunks of about
    ``chunk_seconds``; outputs go to a temporary directory as the command line writes them."""
    saved = experiment.CHUNK_SECONDS
    experiment.CHUNK_SECONDS = chunk_seconds
    try:
        with tempfile.TemporaryDirectory() as folder:
            options = RunOptions()
            outcome = experiment.train(config, options, run_dir=Path(folder))
    finally:
        experiment.CHUNK_SECONDS = saved
    return outcome.run_s


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.watch_overhead",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    add_output_flags(parser)
    args = parser.parse_args()
    base = PPOConfig(**get_preset("CartPole-v1").config)
    settings = {
        "one chunk": (base, 1e9),
        "chunks of ~1 s": (base, experiment.CHUNK_SECONDS),
        "chunks + eval": (base.replace(eval_every=50, eval_episodes=10),
                          experiment.CHUNK_SECONDS),
    }
    for config, seconds in settings.values():  # compile (and warm) every program first
        run_once(config, seconds)
    times: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(args.rounds):
        for name, (config, seconds) in settings.items():
            times[name].append(run_once(config, seconds))
    rows = []
    for name, runs in times.items():
        ratios = [t / b for t, b in zip(runs, times["one chunk"], strict=True)]
        rows.append({"setting": name, "median_s": statistics.median(runs),
                     "median_ratio": statistics.median(ratios), "runs_s": runs})
    table = ["| setting | run time (median) | ratio to one chunk (median of rounds) |",
             "|---|---|---|"]
    table += [f"| {r['setting']} | {r['median_s']:.2f} s | {r['median_ratio']:.3f} |"
              for r in rows]
    text = "\n".join(table) + f"\n\n{args.rounds} alternating rounds, CartPole-v1 preset, 1 seed.\n"
    print(text)
    out = output_dir(args)
    print_written([write_json(out / f"{NAME}.json", {"rounds": args.rounds, "rows": rows}),
                   write_text(out / f"{NAME}.md", text)])


if __name__ == "__main__":
    main()
