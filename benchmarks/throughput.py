"""Throughput benchmark: compile time, run time, env steps/s, peak memory and roofline fraction.

    python -m benchmarks.throughput                 # every setting, then the peers
    python -m benchmarks.throughput --record        # the same, written to benchmarks/results/
    python -m benchmarks.throughput --quick         # smaller budgets (a smoke run)
    python -m benchmarks.throughput --no-peers
    python -m benchmarks.throughput --only 0 --trials 3   # the 1-seed row and its peers, 3 times

Each setting runs in a fresh subprocess (so its peak RSS is its own), timed as: compile
(``jit(...).lower(...).compile()`` with ``compiler_options()``, as the command line compiles),
then the best of ``--repeats`` runs. The machine's matmul peak is measured on the spot
(1024x1024 float32 through XLA) and every setting reports ``achieved FLOP/s / peak``. FLOPs are
counted analytically from the MLP sizes (see ``flops_per_env_step``). Peers
(``benchmarks/peers``) run in the same invocation, each right after the setting it is compared
with, so ratios compare like with like on a noisy shared machine. With ``--trials N`` the chosen
settings and their peers run N rounds, each round every setting once followed by its peers, and
every figure is the median of the N (the table gives the range too): this machine's speed
drifts by 10-20% within minutes. Prints the table and writes ``throughput.{json,md}`` to a
temporary directory, or to ``benchmarks/results/`` with ``--record``
(``benchmarks/common.py``); a run of some settings (``--only``) writes
``throughput_partial.{json,md}`` and leaves the full table alone.

``--baseline REF`` runs every chosen setting a second time, right after ours, with the library
(the ``purejaxppo/`` package) as it was at git revision ``REF`` and these same benchmark
scripts: the gain of a change measured as a ratio in one invocation, on one machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

import purejaxppo
from benchmarks.common import (
    REPO,
    add_output_flags,
    compile_and_time,
    finals,
    output_dir,
    preset_config,
    print_written,
    read_json,
    run_module,
    whole_rollouts,
    write_json,
    write_text,
)
from benchmarks.peers.run import run_peers
from purejaxppo import PPOConfig, envs, make_train
from purejaxppo.parallel import seed_sharding, use_cpu_cores

MODULE = "benchmarks.throughput"
"""This script as a module: each setting runs in ``python -m benchmarks.throughput --one I``."""


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    env: str
    seeds: int
    overrides: dict
    total_timesteps: int
    quick_timesteps: int
    all_cores: bool = False
    """One CPU device per core (``use_cpu_cores``), the seeds split over them as the CLI does."""
    runner: str = "vmap"
    """``"vmap"``: ``jax.vmap(make_train(config))``, the seeds' keys on ``seed_sharding``, one
    ``vmap`` partitioned by ``jit``; ``"train_runs"``: ``purejaxppo.sweeps.train_runs``, the path
    of ``sweep`` and ``random_search`` (each device its share of the runs through ``shard_map``,
    in groups of ``parallel.runs_per_batch()``), which the command line's ``--num-seeds`` shares
    (``app.experiment.make_seeds_run``)."""


def settings() -> list[Setting]:
    cp = "CartPole-v1"
    return [
        Setting("cartpole 4 envs x 1 seed", cp, 1, {}, 499_712, 131_072),
        Setting("cartpole 4 envs x 16 seeds", cp, 16, {}, 499_712, 65_536),
        Setting("cartpole 4 envs x 16 seeds, all cores", cp, 16, {}, 499_712, 65_536, True),
        Setting("cartpole 4 envs x 64 seeds", cp, 64, {}, 249_856, 32_768),
        Setting("cartpole 4 envs x 64 seeds, all cores", cp, 64, {}, 249_856, 32_768, True,
                "train_runs"),
        Setting("cartpole 64 envs x 1 seed", cp, 1, {"num_envs": 64}, 1_048_576, 262_144),
        Setting("cartpole 1024 envs x 1 seed", cp, 1, {"num_envs": 1024}, 2_097_152, 524_288),
        # Breakout's preset with its earlier 2x256 MLP (the preset now uses the CNN, whose FLOPs
        # are not counted): the roofline row.
        Setting("breakout-minatar preset, mlp x 1 seed", "Breakout-MinAtar", 1,
                {"network": "mlp"}, 327_680, 65_536),
        Setting("pendulum preset x 1 seed", "Pendulum-v1", 1, {}, 204_800, 40_960),
        # The recurrent policy against rows 0 and 1: the same config with network="gru".
        Setting("cartpole gru 4 envs x 1 seed", cp, 1, {"network": "gru"}, 131_072, 32_768),
        Setting("cartpole gru 4 envs x 16 seeds", cp, 16, {"network": "gru"}, 65_536, 16_384),
        # Row 4's runs as one vmap partitioned by jit (the earlier program): the effect of
        # training each device's runs in groups.
        Setting("cartpole 4 envs x 64 seeds, all cores, one vmap", cp, 64, {}, 249_856, 32_768,
                True),
    ]


PEERS_AFTER = {
    "cartpole 4 envs x 1 seed": (["sb3", "rejax"], 1),
    "cartpole 4 envs x 16 seeds, all cores": (["rejax"], 16),
    "cartpole 4 envs x 64 seeds, all cores": (["rejax"], 64),
}
"""Peers (``benchmarks/peers``) run right after a setting: names and seeds, the same budget."""


def flops_per_env_step(config: PPOConfig, obs_size: int, action_size: int) -> float:
    """Matmul FLOPs per environment step (2 per multiply-add), the elementwise work ignored.

    Rollout: one actor and one critic forward, plus a critic forward of the final observation
    (truncation bootstrap). Update: ``update_epochs`` passes, each a forward and a backward
    (~2x the forward) of both networks. Counted for the MLP networks (``network="mlp"``); NaN
    for any other.
    """
    if config.network != "mlp":
        return math.nan

    def mlp(out: int) -> float:
        sizes = [obs_size, *config.hidden_sizes, out]
        return 2.0 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))

    actor, critic = mlp(action_size), mlp(1)
    return actor + 2 * critic + config.update_epochs * 3 * (actor + critic)


def matmul_peak(n: int = 1024, seconds: float = 2.0) -> float:
    """FLOP/s of an ``n x n`` float32 matmul through XLA on the default device."""
    a = jax.random.normal(jax.random.key(0), (n, n))
    b = jax.random.normal(jax.random.key(1), (n, n))
    f = jax.jit(lambda x, y: x @ y)
    jax.block_until_ready(f(a, b))
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        jax.block_until_ready(f(a, b))
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best


def run_one(setting: Setting, quick: bool, repeats: int) -> dict:
    """Runs one setting in this process (a fresh one: ``--one``) and returns its measurements."""
    if setting.all_cores:
        use_cpu_cores()  # before JAX runs anything
    config = preset_config(setting.env, **setting.overrides)
    total = setting.quick_timesteps if quick else setting.total_timesteps
    config = whole_rollouts(config, total)
    keys = jax.random.split(jax.random.key(0), setting.seeds)
    fn = jax.vmap(make_train(config)) if setting.seeds > 1 else make_train(config)
    args = keys if setting.seeds > 1 else keys[0]
    sharding = seed_sharding(setting.seeds) if setting.all_cores else None
    if sharding is not None:  # jit partitions the vmap over the seed axis
        args = jax.device_put(keys, sharding)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if setting.runner == "train_runs":  # the program sweeps.train_runs jits, on the keys' data
        from purejaxppo.sweeps import runs_program

        fn = runs_program(config, setting.seeds, jax.random.key_impl(keys))
        hparams = jax.tree.map(lambda v: np.full(setting.seeds, v, np.float32),
                               config.hyperparams())
        args = (np.asarray(jax.random.key_data(keys)), hparams, None)
    else:
        args = (args,)
    result, compile_s, run_s = compile_and_time(fn, *args, repeats=repeats)
    steps = setting.seeds * config.num_updates * config.batch_size
    env = envs.make(config.env)
    flops = flops_per_env_step(config, env.obs_size, env.action_size)
    return {
        "setting": setting.name, "env": config.env, "seeds": setting.seeds,
        "devices": 1 if sharding is None else sharding.mesh.size,
        "num_envs": config.num_envs, "num_steps": config.num_steps,
        "total_timesteps_per_seed": config.num_updates * config.batch_size,
        "compile_s": round(compile_s, 3), "run_s": round(run_s, 4),
        "steps_per_s": steps / run_s, "flops_per_step": flops, "flop_per_s": steps * flops / run_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_compile_mb": rss0 / 1024,
        "final_return_mean": finals(result.metrics["episode_return"]).mean,
        "package": str(Path(purejaxppo.__file__).resolve().parent),
    }


def baseline_package(ref: str) -> Path:
    """The ``purejaxppo/`` package of git revision ``ref``, unpacked in a new temporary
    directory, which is returned (put it first on ``PYTHONPATH`` to import that version).

    Raises:
        ValueError: ``ref`` is not a revision of this repository, or has no ``purejaxppo/``.
    """
    out = subprocess.run(["git", "archive", "--format=tar", ref, "purejaxppo"], cwd=REPO,
                         capture_output=True)
    if out.returncode != 0:
        why = out.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["git failed"]
        raise ValueError(f"--baseline {ref}: {why[0]} (give a commit, tag or branch of this "
                         "repository)")
    root = Path(tempfile.mkdtemp(prefix="purejaxppo-baseline-"))
    with tempfile.TemporaryFile() as archive:
        archive.write(out.stdout)
        archive.seek(0)
        with tarfile.open(fileobj=archive) as tar:
            tar.extractall(root, filter="data")
    return root


def run_subprocess(index: int, quick: bool, repeats: int, package_root: Path | None = None
                   ) -> dict:
    """One setting in a fresh process; with ``package_root``, importing the library from there."""
    args = ["--one", str(index), "--repeats", str(repeats)] + (["--quick"] if quick else [])
    env = None
    if package_root is not None:  # run from there (first on sys.path), these scripts from REPO
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    name = settings()[index].name
    try:
        out = run_module(MODULE, args, timeout_s=1800, env=env, cwd=package_root)
    except subprocess.TimeoutExpired:
        return {"setting": name, "error": ["timed out after 1800 s"]}
    if out.returncode != 0:
        return {"setting": name, "error": out.stderr.strip().splitlines()[-1:]}
    record = json.loads(out.stdout.strip().splitlines()[-1])
    expected = (package_root or REPO) / "purejaxppo"
    if Path(record.get("package", "")) != expected.resolve():
        return {"setting": name, "error": [f"imported {record.get('package')}, not {expected}"]}
    return record


MEDIAN_KEYS = ("compile_s", "run_s", "steps_per_s", "flop_per_s", "peak_rss_mb")


def median_record(records: list[dict]) -> dict:
    """One record from the same measurement repeated: the median of every timing, each trial's
    values under ``trials``. An error in any trial is the result."""
    errors = [r for r in records if r.get("error")]
    if errors or len(records) == 1:
        return errors[0] if errors else records[0]
    out = dict(records[0])
    out["trials"] = {k: [r[k] for r in records] for k in MEDIAN_KEYS
                     if all(isinstance(r.get(k), int | float) for r in records)}
    for key, values in out["trials"].items():
        out[key] = statistics.median(values)
    return out


def _figure(record: dict, key: str, fmt) -> str:
    """``fmt(median)``, followed by ``(fmt(min)-fmt(max))`` when the record has trials."""
    values = record.get("trials", {}).get(key)
    text = fmt(record[key])
    return f"{text} ({fmt(min(values))}-{fmt(max(values))})" if values else text


def _flops(row: dict, peak: float) -> str:
    """The GFLOP/s and fraction-of-peak cells ("-" where FLOPs are not counted)."""
    flop_per_s = row.get("flop_per_s")
    if flop_per_s is None or math.isnan(flop_per_s):
        return "- | -"
    return f"{flop_per_s / 1e9:.1f} | {flop_per_s / peak:.1%}"


def markdown(rows: list[dict], peak: float, peers: list[dict], trials: int = 1,
             baseline: list[dict] | None = None, baseline_ref: str = "") -> str:
    lines = [f"Each figure is the median of {trials} runs, alternating with the peers' (range in "
             "brackets).", ""] if trials > 1 else []
    lines += [f"Matmul peak measured now: {peak / 1e9:.0f} GFLOP/s (1024x1024 float32, XLA, "
             "one CPU device, which uses every core for a matmul this large). 'all cores': one "
             "CPU device per core, the seeds split over them.", "",
             "| setting | compile s | run s | env steps/s | peak RSS MB | GFLOP/s | of peak |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['setting']} | error: {r['error']} | | | | | |")
            continue
        lines.append(f"| {r['setting']} | {_figure(r, 'compile_s', lambda v: f'{v:.1f}')} | "
                     f"{r['run_s']:.2f} | {_figure(r, 'steps_per_s', lambda v: f'{v / 1e3:,.0f}k')} | "
                     f"{r['peak_rss_mb']:.0f} | {_flops(r, peak)} |")
    if peers:
        def ours(name: str) -> dict | None:
            row = next((r for r in rows if r.get("setting") == name), None)
            return row if row and "error" not in row else None

        lines += ["", "Peers, same invocation, CartPole-v1, same settings. Ratios: ours on one "
                  "device / theirs, and ours with the seeds split over every core / theirs:", "",
                  "| implementation | seeds | compile s | env steps/s | ours / theirs | "
                  "ours, all cores / theirs |", "|---|---|---|---|---|---|"]
        for p in peers:
            seeds = p.get("num_seeds", 1)
            if p.get("error"):
                lines.append(f"| {p.get('peer')} | {seeds} | | error: {p['error']} | | |")
                continue
            name = f"cartpole 4 envs x {seeds} seed{'s' if seeds > 1 else ''}"
            ratios = []
            for mine in (ours(name), ours(f"{name}, all cores")):
                ratios.append(f"{mine['steps_per_s'] / p['steps_per_s']:.2f}x" if mine else "-")
            compile_s = p.get("compile_s")
            compile_s = (_figure(p, "compile_s", lambda v: f"{v:.1f}") if compile_s and compile_s > 0
                         else "-")
            steps = _figure(p, "steps_per_s", lambda v: f"{v / 1e3:,.1f}k")
            lines.append(f"| {p['peer']} | {seeds} | {compile_s} | {steps} | "
                         f"{ratios[0]} | {ratios[1]} |")
    if baseline:
        lines += ["", f"The library at `{baseline_ref}`, each setting run right after ours "
                  "(same scripts, same invocation):", "",
                  "| setting | compile s | env steps/s | ours / it (speed) | ours / it (compile) |",
                  "|---|---|---|---|---|"]
        for b, r in zip(baseline, rows, strict=True):
            if "error" in b or "error" in r:
                lines.append(f"| {b['setting']} | error: {b.get('error') or r.get('error')} | | | |")
                continue
            lines.append(f"| {b['setting']} | {_figure(b, 'compile_s', lambda v: f'{v:.1f}')} | "
                         f"{_figure(b, 'steps_per_s', lambda v: f'{v / 1e3:,.0f}k')} | "
                         f"{r['steps_per_s'] / b['steps_per_s']:.2f}x | "
                         f"{r['compile_s'] / b['compile_s']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller budgets")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--peers", nargs="+", metavar="NAME",
                        help="run only these peers (of: sb3 rejax); default all")
    parser.add_argument("--only", nargs="*", type=int,
                        help="indices of settings to run (written to throughput_partial.*)")
    parser.add_argument("--trials", type=int, default=1,
                        help="run each setting and its peers this many times, alternating; "
                             "report medians")
    parser.add_argument("--render", action="store_true",
                        help="only rewrite the markdown table from the JSON of the last run (in "
                             "the output directory)")
    parser.add_argument("--baseline", metavar="REF",
                        help="also run each setting with the library at git revision REF, "
                             "right after ours")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    add_output_flags(parser)
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error(f"--trials must be >= 1, got {args.trials}")
    known_peers = sorted({n for names, _ in PEERS_AFTER.values() for n in names})
    if args.peers and not set(args.peers) <= set(known_peers):
        parser.error(f"--peers: choose from {' '.join(known_peers)}, got {' '.join(args.peers)}")
    if args.only and not set(args.only) <= set(range(len(settings()))):
        parser.error(f"--only: settings are numbered 0..{len(settings()) - 1}, got {args.only}")
    if args.one is not None:  # a child process: one setting, its record on stdout
        print(json.dumps(run_one(settings()[args.one], args.quick, args.repeats)))
        return 0
    out = output_dir(args)
    name = "throughput" + ("_partial" if args.only else "") + ("_quick" if args.quick else "")
    if args.render:
        payload = read_json(out / f"{name}.json")
        if not payload:
            parser.error(f"--render: there is no {out / name}.json to render")
        table = markdown(payload["rows"], payload["matmul_peak_flop_per_s"], payload["peers"],
                         payload.get("trials", 1), payload.get("baseline"),
                         payload.get("baseline_ref", ""))
        print(table)
        print_written([write_text(out / f"{name}.md", table)])
        return 0

    package_root = None
    if args.baseline:
        try:
            package_root = baseline_package(args.baseline)
        except ValueError as err:
            parser.error(str(err))
    peak = matmul_peak()
    print(f"matmul peak: {peak / 1e9:.0f} GFLOP/s", flush=True)
    chosen = [(i, s) for i, s in enumerate(settings()) if not args.only or i in args.only]
    trials: dict[int, list[dict]] = {i: [] for i, _ in chosen}
    peer_trials: dict[int, list[list[dict]]] = {i: [] for i, _ in chosen}
    baseline_trials: dict[int, list[dict]] = {i: [] for i, _ in chosen}
    for _ in range(args.trials):  # rounds: every chosen setting and its contenders once each
        for i, setting in chosen:
            row = run_subprocess(i, args.quick, args.repeats)
            trials[i].append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "config"}), flush=True)
            if package_root is not None:
                before = run_subprocess(i, args.quick, args.repeats, package_root)
                baseline_trials[i].append(before)
                print(json.dumps({"baseline": args.baseline, **before}), flush=True)
            if not args.no_peers and setting.name in PEERS_AFTER:
                # Right after the setting they are compared with: the machine is shared and its
                # speed drifts, so each ratio is of two runs minutes apart, not a whole run apart.
                names, seeds = PEERS_AFTER[setting.name]
                names = [n for n in names if not args.peers or n in args.peers]
                total = setting.quick_timesteps if args.quick else setting.total_timesteps
                peer_trials[i].append(run_peers(total, names, seeds))
    rows = [median_record(trials[i]) for i, _ in chosen]
    peers = [median_record(list(same)) for i, _ in chosen
             for same in zip(*peer_trials[i], strict=True)]
    baseline = [median_record(baseline_trials[i]) for i, _ in chosen if baseline_trials[i]]
    payload = {"device": str(jax.devices()[0]), "jax": jax.__version__, "cpu_count": os.cpu_count(),
               "matmul_peak_flop_per_s": peak, "quick": args.quick, "trials": args.trials,
               "rows": rows, "peers": peers, "baseline": baseline,
               "baseline_ref": args.baseline or ""}
    table = markdown(rows, peak, peers, args.trials, baseline, args.baseline or "")
    print(table)
    print_written([write_json(out / f"{name}.json", payload),
                   write_text(out / f"{name}.md", table)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
