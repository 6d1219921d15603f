"""Learning benchmark: every gymnax preset at its own budget, seeds vmapped, final return per seed.

    python -m benchmarks.learning                                   # every row below
    python -m benchmarks.learning --record                          # the same, into benchmarks/results/
    python -m benchmarks.learning --envs Pendulum-v1 --record --background   # detached, logged
    python -m benchmarks.learning --envs Breakout-MinAtar --network cnn --record
    python -m benchmarks.learning --envs CartPole-v1 --seeds 2 --steps 4096  # a quick look
    python -m benchmarks.learning --envs Freeway-MinAtar --first-seed 2 --seeds 2 --record
    python -m benchmarks.learning --plot-only --record              # table and figure from the files
    python -m benchmarks.learning --merge FILE --record             # join a part kept aside

Rows: one per environment of :data:`ROWS` (the gymnax presets of ``purejaxppo/app/presets.json``),
each trained with its preset at the preset's ``total_timesteps`` (``--steps`` overrides it,
rounded down to whole rollouts) and its default seed count (``--seeds``), all seeds in one
compiled program split over one CPU device per core (``use_cpu_cores``) or over the GPUs.
``--network NAME`` replaces the preset's network; such a row's key is ``"ENV [NAME]"``, so that it
sits next to the preset's row ``"ENV"``. Seed ``i`` trains from the ``i``-th of
``jax.random.split(jax.random.key(0), n)`` for any ``n > i``, so a long row can be trained in
parts: ``--first-seed K`` trains seeds ``K .. K + seeds - 1``, and a part whose seeds start where
the recorded row's end (or end where they start), with the same settings, is joined with it in
seed order (per-seed returns and curves joined, mean, std and checks recomputed, times summed,
each part's commit kept under ``parts``; ``commit`` reads ``A + B`` when they differ). A part
that would leave a gap or overlap, or that has other settings, is refused before anything
trains. Should the recorded row change while a part trains (another run writing into the same
directory), the finished part is not lost: it is written to ``learning-unmerged-KEY-SEEDS.json``
beside the table, the exit status is 1, and ``--merge FILE`` joins it later.

A seed's final return is ``purejaxppo.metrics.final_return``: its mean ``episode_return`` over the
last 5% of updates. A row passes when the mean over seeds is at or above the published figure
(:data:`PUBLISHED_SOURCE`) where there is one, otherwise at or above the row's own target, and,
where the row sets a floor, no seed is below it or lacks a final return; rows with neither figure
are reported only (``passed`` null). ``target_met`` says whether the row's own target (with its
floor) is met, independently of the published figure.

Output (to a temporary directory, or to ``benchmarks/results/`` with ``--record``; see
``benchmarks/common.py``), rewritten after every row and merged with the rows already there (a
rerun row replaces the row of the same key, a part continuing it is appended):

* ``learning.json``: one row per key: final returns (mean, std, per seed, worst), the checks,
  ``compile_s``, ``run_s`` (the compiled program), ``wall_s`` (the whole row: setup, compile,
  run, fetch), ``steps_per_s``, devices, device, jax version, ``commit`` (``git rev-parse
  --short HEAD`` at start, ``+dirty`` when files outside ``benchmarks/results/`` differ from it)
  and the config.
* ``learning_curves.json``: per key, ``env_steps`` after each sampled update (at most
  :data:`CURVE_POINTS`, first and last included) and ``episode_return[seed][point]`` (null before
  a seed's first finished episode), with the timing and provenance fields of the row.
* ``learning.md``: the table. ``learning.png``: one panel per environment, each key of that
  environment as its mean +- std band over seeds against env steps, the published figure dashed.

``--background`` starts the same command detached from the terminal (its own session, output to
a log file under :func:`benchmarks.common.default_out_dir`), prints its pid and log path, and
returns at once. The exit status is 1 when a row run by this command fails, else 0.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple, TypeVar

import jax
import numpy as np

from benchmarks.common import (
    REPO,
    add_output_flags,
    compile_and_time,
    default_out_dir,
    finals,
    json_safe,
    nan_mean,
    new_figure,
    output_dir,
    preset_config,
    print_written,
    read_json,
    summarize,
    use_all_cores,
    whole_rollouts,
    write_json,
    write_text,
)
from purejaxppo import PPOConfig, envs, make_train
from purejaxppo.networks import make_networks, registered_networks
from purejaxppo.parallel import seed_sharding

NAME = "learning"
T = TypeVar("T")
MODULE = "benchmarks.learning"

CURVE_POINTS = 200
"""At most this many updates per curve in ``learning_curves.json``."""

PUBLISHED_SOURCE = ("gymnax's tuned PPO (gymnax README, gymnax-blines; 10M steps for MinAtar); "
                    "CartPole-v1: its maximum return, 500")


class RowSpec(NamedTuple):
    """What a row of an environment is judged against, and its default seed count."""

    seeds: int
    target: float | None
    """The row's own bar for the mean final return over seeds."""
    published: float | None
    """The published final return (:data:`PUBLISHED_SOURCE`)."""
    floor: float | None = None
    """Every seed's final return must be at or above this."""


ROWS: dict[str, RowSpec] = {
    "CartPole-v1": RowSpec(16, 475.0, 500.0),
    "Acrobot-v1": RowSpec(16, -100.0, -80.0),
    "MountainCar-v0": RowSpec(16, None, -118.0),
    "Pendulum-v1": RowSpec(16, -150.0, -130.0, floor=-500.0),
    "MountainCarContinuous-v0": RowSpec(16, None, 92.0),
    "Asterix-MinAtar": RowSpec(4, None, 15.0),
    "Breakout-MinAtar": RowSpec(4, None, 28.0),
    "Freeway-MinAtar": RowSpec(4, None, 58.0),
    "SpaceInvaders-MinAtar": RowSpec(4, None, 131.0),
    "Seaquest-MinAtar": RowSpec(4, None, None),
}
"""Every gymnax preset of ``purejaxppo/app/presets.json``."""


# ---------------------------------------------------------------------------------------------
# Rows


def row_key(env: str, network: str) -> str:
    """``env`` when ``network`` is the preset's, else ``"env [network]"``."""
    return env if network == preset_config(env).network else f"{env} [{network}]"


def row_config(env: str, steps: int | None, network: str | None) -> PPOConfig:
    """The preset of ``env`` with ``network``, at ``steps`` (default: the preset's budget)
    rounded down to whole rollouts."""
    config = preset_config(env) if network is None else preset_config(env, network=network)
    return whole_rollouts(config, config.total_timesteps if steps is None else steps)


def judge(spec: RowSpec, per_seed: np.ndarray) -> dict:
    """The checks of a row from its per-seed final returns (NaN: no final return):
    ``worst_seed``, ``criterion``, ``passed`` and ``target_met``."""
    done = per_seed[~np.isnan(per_seed)]
    mean = float(done.mean()) if done.size else math.nan
    worst = float(done.min()) if done.size else math.nan
    floor_ok = (spec.floor is None
                or bool(done.size == per_seed.size and worst >= spec.floor))
    floor_text = "" if spec.floor is None else f", every seed >= {spec.floor:g}"
    bar, what = ((spec.published, "published") if spec.published is not None
                 else (spec.target, "target"))
    passed = None if bar is None else bool(mean >= bar and floor_ok)
    criterion = "report" if bar is None else f"mean >= {bar:g} ({what}){floor_text}"
    target_met = None if spec.target is None else bool(mean >= spec.target and floor_ok)
    return {"worst_seed": worst, "criterion": criterion, "passed": passed,
            "target_met": target_met}


def curve_points(num_updates: int, max_points: int = CURVE_POINTS) -> np.ndarray:
    """Indices of at most ``max_points`` updates, evenly spread, first and last included."""
    if num_updates <= max_points:
        return np.arange(num_updates)
    return np.unique(np.linspace(0, num_updates - 1, max_points).round().astype(int))


def source_commit() -> str | None:
    """``git rev-parse --short HEAD``, with ``+dirty`` when a file outside
    ``benchmarks/results/`` differs from it (untracked files included); None without git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, check=True,
                              capture_output=True, text=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--", ".",
                                 ":(exclude)benchmarks/results"], cwd=REPO, check=True,
                                capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if status.strip() else "")


def seed_keys(first_seed: int, seeds: int) -> jax.Array:
    """The keys of seeds ``first_seed .. first_seed + seeds - 1``: seed ``i``'s key is the same
    whatever the row's seed count, so a row can be trained in parts (``--first-seed``)."""
    return jax.random.split(jax.random.key(0), first_seed + seeds)[first_seed:]


def run(env: str, seeds: int, config: PPOConfig, commit: str | None,
        first_seed: int = 0) -> tuple[dict, dict]:
    """Trains seeds ``first_seed .. first_seed + seeds - 1`` of ``config``; its row for
    ``learning.json`` and its curves entry for ``learning_curves.json``."""
    start = time.perf_counter()
    spec = ROWS[env]
    key = row_key(env, config.network)
    keys = seed_keys(first_seed, seeds)
    sharding = seed_sharding(seeds)
    if sharding is not None:  # jit partitions the vmap over the seed axis
        keys = jax.device_put(keys, sharding)
    devices = 1 if sharding is None else sharding.mesh.size
    print(f"{key}: {seeds} seeds from seed {first_seed} x {config.total_timesteps:,} steps on "
          f"{devices} device(s), started {datetime.now().astimezone():%Y-%m-%d %H:%M:%S}", flush=True)
    result, compile_s, run_s = compile_and_time(jax.vmap(make_train(config)), keys)
    returns = np.asarray(result.metrics["episode_return"], np.float64)  # [seeds, updates]
    env_steps = np.asarray(result.metrics["env_steps"])[0]
    final = finals(returns)
    wall_s = time.perf_counter() - start
    run_info = {
        "compile_s": round(compile_s, 2),
        "run_s": round(run_s, 2),
        "wall_s": round(wall_s, 2),
        "steps_per_s": round(seeds * config.num_updates * config.batch_size / run_s),
        "devices": devices,
        "device": str(jax.devices()[0]),
        "jax": jax.__version__,
        "commit": commit,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    row = {
        "key": key,
        "env": env,
        "network": config.network,
        "total_timesteps": config.total_timesteps,
        "num_updates": config.num_updates,
        "first_seed": first_seed,
        "seeds": seeds,
        "final_return_mean": final.mean,
        "final_return_std": final.std,
        "final_returns": final.per_run.tolist(),
        "unfinished_seeds": final.unfinished,
        "last_update_return_mean": float(nan_mean(returns[:, -1])),
        "target": spec.target,
        "seed_floor": spec.floor,
        "published": spec.published,
        **judge(spec, final.per_run),
        **run_info,
        "config": config.to_dict(),
    }
    points = curve_points(returns.shape[1])
    curves = {"env": env, "network": config.network, "published": spec.published,
              "first_seed": first_seed, "seeds": seeds, "final_return_mean": final.mean,
              "env_steps": [int(s) for s in env_steps[points]],
              "episode_return": np.round(returns[:, points], 3).tolist(), **run_info}
    verdict = "report" if row["passed"] is None else ("passed" if row["passed"] else "FAILED")
    print(f"{key}: {final.mean:.1f} +- {final.std:.1f}, worst seed {row['worst_seed']:.1f} "
          f"({row['criterion']}: {verdict}); compile {compile_s:.0f} s, run {run_s:.0f} s, "
          f"row {wall_s:.0f} s", flush=True)
    return row, curves


# ---------------------------------------------------------------------------------------------
# Files


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """Holds an exclusive lock on the directory ``out``, so that two runs writing into it merge
    one at a time."""
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _key(row: dict) -> str:
    return row.get("key", row["env"])  # rows recorded before keys existed: one per env


def _order(key: str, env: str) -> tuple[int, str]:
    envs_ = list(ROWS)
    return (envs_.index(env) if env in envs_ else len(envs_), key)


def _seed_range(row: dict) -> tuple[int, int]:
    first = row.get("first_seed", 0)  # rows recorded before --first-seed: seeds from 0
    return first, first + row["seeds"]


def _plain(value: object) -> object:
    """``value`` as read back from JSON (tuples as lists, NaN as null)."""
    return json.loads(json.dumps(json_safe(value)))


def continues(previous: dict | None, row: dict) -> str | None:
    """How ``row`` joins the recorded row ``previous`` of its key: ``"replace"`` (no previous
    row, or the same first seed), ``"append"`` (its seeds start where ``previous``'s end) or
    ``"prepend"`` (they end where ``previous``'s start), the last two only with the same
    settings; None when it can do none of these (a gap, an overlap or other settings), which
    :func:`merge` refuses."""
    if previous is None or _seed_range(previous)[0] == _seed_range(row)[0]:
        return "replace"
    if _plain(previous.get("config")) != _plain(row.get("config")):
        return None
    if _seed_range(previous)[1] == _seed_range(row)[0]:
        return "append"
    if _seed_range(row)[1] == _seed_range(previous)[0]:
        return "prepend"
    return None


_PART_FIELDS = ("first_seed", "seeds", "commit", "run_s", "finished_at")


def _parts(row: dict) -> list[dict]:
    """The parts ``row`` was trained in (itself, for a row trained at once)."""
    return row.get("parts") or [{k: row.get(k, 0 if k == "first_seed" else None)
                                 for k in _PART_FIELDS}]


def _joined_run_info(a: dict, b: dict) -> dict:
    """The timing and provenance of a row made of ``a``'s seeds and then ``b``'s, whichever
    was trained first: times summed, each part kept in seed order, the newest run's device."""
    run_s = a["run_s"] + b["run_s"]
    steps = a["steps_per_s"] * a["run_s"] + b["steps_per_s"] * b["run_s"]
    newest = max(a, b, key=lambda r: r.get("finished_at") or "")
    parts = [*_parts(a), *_parts(b)]
    commits = list(dict.fromkeys(str(p.get("commit")) for p in parts))
    return {"compile_s": round(a["compile_s"] + b["compile_s"], 2), "run_s": round(run_s, 2),
            "wall_s": round(a["wall_s"] + b["wall_s"], 2), "steps_per_s": round(steps / run_s),
            **{k: newest[k] for k in ("devices", "device", "jax", "finished_at")},
            "commit": " + ".join(commits), "parts": parts}


def extend(a: dict, b: dict) -> dict:
    """The row of ``learning.json`` made of ``a``'s seeds and then ``b``'s (``b`` continues
    ``a``, :func:`continues`): per-seed final returns joined, mean, std and checks recomputed
    over all of them, times summed, every part's commit kept (``parts``)."""
    spec = ROWS[b["env"]]
    final = summarize(a["final_returns"] + b["final_returns"])
    last = [(r["last_update_return_mean"], r["seeds"]) for r in (a, b)
            if r.get("last_update_return_mean") is not None
            and not math.isnan(r["last_update_return_mean"])]
    return {**b, "first_seed": _seed_range(a)[0], "seeds": a["seeds"] + b["seeds"],
            "final_return_mean": final.mean, "final_return_std": final.std,
            "final_returns": final.per_run.tolist(), "unfinished_seeds": final.unfinished,
            "last_update_return_mean": (sum(v * n for v, n in last) / sum(n for _, n in last)
                                        if last else math.nan),
            "target": spec.target, "seed_floor": spec.floor, "published": spec.published,
            **judge(spec, final.per_run), **_joined_run_info(a, b)}


def extend_curves(a: dict, b: dict, row: dict) -> dict:
    """The curves entry of the row :func:`extend` made: ``a``'s seeds, then ``b``'s."""
    if a["env_steps"] != b["env_steps"]:
        raise ValueError(f"{_key(row)}: the parts' curves are at different env steps")
    return {**b, "first_seed": row["first_seed"], "seeds": row["seeds"],
            "final_return_mean": row["final_return_mean"],
            "episode_return": a["episode_return"] + b["episode_return"],
            **{k: row[k] for k in ("compile_s", "run_s", "wall_s", "steps_per_s", "commit",
                                   "finished_at", "parts")}}


def merge(out: Path, rows: list[dict], curves: dict[str, dict]) -> list[dict]:
    """Merges ``rows`` and ``curves`` into the files in ``out``: a row whose seeds continue the
    recorded row of its key (before or after it) is joined with it (:func:`extend`), any other
    replaces it; the rows as written (NaN as null), in table order. Raises ValueError, writing
    nothing, for a row that neither joins nor replaces its recorded row (:func:`continues`)."""
    path = out / f"{NAME}.json"
    previous = read_json(path)
    merged = {_key(r): r for r in previous.get("rows", [])}
    curves_path = out / f"{NAME}_curves.json"
    all_curves = read_json(curves_path).get("rows", {})
    curves = dict(curves)
    for r in rows:
        key = _key(r)
        how = continues(merged.get(key), r)
        if how is None:
            raise ValueError(f"{key}: seeds {_span(r)} neither continue the recorded seeds "
                             f"{_span(merged[key])} with the same settings nor replace them")
        if how != "replace":
            r = extend(*_in_seed_order(how, merged[key], r))
            if key in curves and key in all_curves:
                curves[key] = extend_curves(*_in_seed_order(how, all_curves[key], curves[key]), r)
        merged[key] = r
    ordered = sorted(merged.values(), key=lambda r: _order(_key(r), r["env"]))
    write_json(path, {"device": str(jax.devices()[0]), "jax": jax.__version__,
                      "published_source": PUBLISHED_SOURCE, "rows": ordered})
    all_curves = {**all_curves, **curves}
    ordered_curves = dict(sorted(all_curves.items(), key=lambda kv: _order(kv[0], kv[1]["env"])))
    text = json.dumps(json_safe({"rows": ordered_curves}), indent=1)
    # Each list of numbers on one line: a curve is a line of the file.
    text = re.sub(r"\[\s+([^\[\]{}\"]*?)\s+\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]",
                  text)
    write_text(curves_path, text + "\n")
    return read_json(path)["rows"]


def _in_seed_order(how: str, recorded: T, new: T) -> tuple[T, T]:
    """The recorded part and the new one in seed order (``how`` from :func:`continues`)."""
    return (recorded, new) if how == "append" else (new, recorded)


def _span(row: dict) -> str:
    first, end = _seed_range(row)
    return f"{first}..{end - 1}"


def keep_unmerged(out: Path, row: dict, curves: dict) -> Path:
    """Writes a trained row that :func:`merge` refused to its own file in ``out``
    (``learning-unmerged-KEY-SEEDS.json``, ``-2``, ``-3``... after it when that exists; read back
    by ``--merge``), so no training is lost."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", _key(row)).strip("_")
    stem = f"{NAME}-unmerged-{name}-{_span(row).replace('..', '-')}"
    path, n = out / f"{stem}.json", 1
    while path.exists():  # an earlier part of the same seeds kept aside stays as it is
        n += 1
        path = out / f"{stem}-{n}.json"
    return write_json(path, {"rows": [row], "curves": {_key(row): curves}})


def render(out: Path) -> list[Path]:
    """Rewrites ``learning.md`` and ``learning.png`` from the JSON files in ``out``; the paths
    written (no figure without curves)."""
    rows = read_json(out / f"{NAME}.json").get("rows", [])
    written = [write_text(out / f"{NAME}.md", markdown(rows))]
    curves = read_json(out / f"{NAME}_curves.json").get("rows", {})
    if curves:
        written.append(plot(out / f"{NAME}.png", curves))
    return written


def _number(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _passed_cell(r: dict) -> str:
    criterion = r.get("criterion")
    if criterion is None:  # a row recorded before criteria were written
        criterion = "report" if r.get("target") is None else f"mean >= {r['target']:g} (target)"
    if r.get("passed") is None:
        return criterion
    text = f"{'yes' if r['passed'] else 'NO'}: {criterion}"
    if r.get("published") is not None and r.get("target_met") is not None:
        floor = "" if r.get("seed_floor") is None else f", every seed >= {r['seed_floor']:g}"
        text += f"; target >= {r['target']:g}{floor}: {'met' if r['target_met'] else 'NOT met'}"
    return text


def _seeds_cell(row: dict) -> str:
    first, end = _seed_range(row)
    return str(row["seeds"]) if first == 0 else f"{row['seeds']} (seeds {first}-{end - 1})"


def markdown(rows: list[dict]) -> str:
    """The table of ``rows`` as written in ``learning.json`` (older rows lack some fields:
    shown as ``-``)."""
    lines = ["| env | network | steps | seeds | final return (mean +- std) | worst seed | "
             "published | passed | run s (wall s) | steps/s | commit |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        network = r.get("network") or r.get("config", {}).get("network", "mlp")
        wall = f" ({r['wall_s']:.0f})" if r.get("wall_s") is not None else ""
        unfinished = f" ({r['unfinished_seeds']} unfinished)" if r.get("unfinished_seeds") else ""
        lines.append(
            f"| {r['env']} | {network} | {r['total_timesteps']:,} | {_seeds_cell(r)}{unfinished} | "
            f"{_number(r['final_return_mean'], '.1f')} +- {_number(r['final_return_std'], '.1f')} | "
            f"{_number(r.get('worst_seed'), '.1f')} | {_number(r.get('published'), 'g')} | "
            f"{_passed_cell(r)} | {r['run_s']:.0f}{wall} | {_number(r.get('steps_per_s'), ',')} | "
            f"{r.get('commit') or '-'} |")
    return "\n".join(lines) + "\n"


def _mean_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over axis 0 ignoring NaN; NaN where every value is."""
    mean = nan_mean(x, axis=0)
    var = nan_mean((x - mean) ** 2, axis=0)
    return mean, np.sqrt(var)


def plot(path: Path, curves: dict[str, dict]) -> Path:
    """One panel per environment of ``curves`` (``learning_curves.json``'s rows): each key's mean
    +- std over seeds against env steps, the published figure as a dashed line."""
    by_env: dict[str, list[str]] = {}
    for key in sorted(curves, key=lambda k: _order(k, curves[k]["env"])):
        by_env.setdefault(curves[key]["env"], []).append(key)
    cols = min(4, len(by_env))
    rows = math.ceil(len(by_env) / cols)
    fig = new_figure(4.6 * cols, 3.6 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (env, keys) in zip(axes, by_env.items(), strict=False):
        published = None
        for key in keys:
            c = curves[key]
            returns = np.asarray([[np.nan if v is None else v for v in seed]
                                  for seed in c["episode_return"]], np.float64)
            mean, std = _mean_std(returns)
            steps = np.asarray(c["env_steps"], np.float64)
            final = c.get("final_return_mean")
            label = f"{c['network']}: {_number(final, '.1f')} ({len(returns)} seeds)"
            line, = ax.plot(steps, mean, lw=1.5, label=label)
            ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2,
                            lw=0)
            published = c.get("published") if c.get("published") is not None else published
        if published is not None:
            ax.axhline(published, color="k", ls="--", lw=1, label=f"published: {published:g}")
        ax.set_title(env, fontsize=10)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("episode return (mean +- std over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[len(by_env):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


# ---------------------------------------------------------------------------------------------
# Command line


def start_in_background(args: argparse.Namespace) -> int:
    """Starts this command without ``--background`` in its own session, output to a log file."""
    argv = ["--envs", *args.envs]
    for flag, value in (("--seeds", args.seeds), ("--steps", args.steps),
                        ("--network", args.network), ("--first-seed", args.first_seed or None)):
        if value is not None:
            argv += [flag, str(value)]
    if args.record:
        argv.append("--record")
    elif args.out is not None:
        argv += ["--out", str(args.out.resolve())]
    logs = default_out_dir()
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{NAME}-{datetime.now():%Y%m%d-%H%M%S}-{'_'.join(args.envs)[:80]}.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", MODULE, *argv], cwd=REPO,
                                stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
    print(f"started pid {proc.pid}: python -m {MODULE} {' '.join(argv)}\nlog: {log}", flush=True)
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, not {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--seeds", type=_positive, default=None,
                        help="seeds per row (default: 16 classic control, 4 MinAtar)")
    parser.add_argument("--first-seed", type=_non_negative, default=0,
                        help="train seeds FIRST_SEED.. (default 0); a row that continues the "
                             "recorded row's seeds with the same settings is appended to it")
    parser.add_argument("--steps", type=_positive, default=None,
                        help="env steps per seed, rounded down to whole rollouts (default: the "
                             "preset's total_timesteps)")
    parser.add_argument("--network", default=None, choices=registered_networks(),
                        help="replace the preset's network (row key 'ENV [NAME]')")
    parser.add_argument("--plot-only", action="store_true",
                        help="train nothing: rewrite the table and figure from the JSON files")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="FILE", default=None,
                        help="train nothing: join rows kept in FILE (a row that could not join "
                             "the recorded one when it finished) into the output files")
    parser.add_argument("--background", action="store_true",
                        help="run detached, output to a log file; prints its pid and path")
    add_output_flags(parser)
    args = parser.parse_args(argv)

    if args.merge:
        return merge_files(parser, output_dir(args), args.merge)
    if args.plot_only:
        out = output_dir(args)
        written = render(out)
        print(written[0].read_text())
        print_written(written)
        return 0
    use_all_cores()  # before JAX runs anything: the seeds split over the cores
    configs = {}
    for env in args.envs:  # every row's settings checked before anything trains
        try:
            configs[env] = row_config(env, args.steps, args.network)
            make_networks(envs.make(env), configs[env])
        except ValueError as e:
            parser.error(f"{env}: {e}")
    if args.background:
        return start_in_background(args)

    commit = source_commit()
    out = output_dir(args)
    recorded = {_key(r): r for r in read_json(out / f"{NAME}.json").get("rows", [])}
    for env in args.envs:  # a part that cannot join the recorded row is refused before training
        key = row_key(env, configs[env].network)
        part = {"first_seed": args.first_seed, "seeds": args.seeds or ROWS[env].seeds,
                "config": configs[env].to_dict()}
        if continues(recorded.get(key), part) is None:
            first, end = _seed_range(recorded[key])
            before = f", or seeds that end at {first - 1}," if first > 0 else ""
            parser.error(f"{key}: seeds {_span(part)} with these settings neither continue the "
                         f"recorded seeds {first}..{end - 1} in {out} (use --first-seed {end}"
                         f"{before} with the same settings) nor replace them (--first-seed "
                         f"{first}); or write elsewhere with --out")
    rows, unmerged = [], []
    for env in args.envs:
        row, curves = run(env, args.seeds or ROWS[env].seeds, configs[env], commit,
                          args.first_seed)
        rows.append(row)
        with locked(out):  # after every row: a long run keeps what it has if interrupted
            try:
                merge(out, [row], {row["key"]: curves})
            except ValueError as e:  # the recorded row changed while this one trained
                kept = keep_unmerged(out, row, curves)
                unmerged.append(kept)
                print(f"error: {e}; this row is kept in {kept} (python -m {MODULE} --merge "
                      f"{kept} --out {out} joins it once it fits)", file=sys.stderr, flush=True)
            written = render(out)
    print(written[0].read_text())
    print_written([out / f"{NAME}.json", out / f"{NAME}_curves.json", *written, *unmerged])
    return 0 if all(r["passed"] is not False for r in rows) and not unmerged else 1


def merge_files(parser: argparse.ArgumentParser, out: Path, files: list[Path]) -> int:
    """``--merge``: joins rows kept by :func:`keep_unmerged` (or any file of that shape) into
    ``out``, each file removed once its rows are in; a file that does not fit is one line,
    exit status 2, and ``out`` is untouched by it."""
    for file in files:
        try:
            saved = json.loads(file.read_text())
            rows, curves = saved["rows"], saved["curves"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            parser.error(f"--merge {file}: not a row file written by this benchmark ({e})")
        with locked(out):
            try:
                merge(out, rows, curves)
            except ValueError as e:
                parser.error(f"--merge {file}: {e}")
        file.unlink()
    written = render(out)
    print(written[0].read_text())
    print_written([out / f"{NAME}.json", out / f"{NAME}_curves.json", *written])
    return 0


if __name__ == "__main__":
    sys.exit(main())
