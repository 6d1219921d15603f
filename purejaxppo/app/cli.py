"""The ``purejaxppo`` command: ``train`` (the default) and ``eval``.

    purejaxppo                                   # CartPole-v1, its preset, into runs/<env>-<time>
    purejaxppo train --env Acrobot-v1 --num-seeds 4 --lr 1e-3
    purejaxppo train --resume runs/Acrobot-v1-20260101-120000
    purejaxppo eval runs/Acrobot-v1-20260101-120000 --episodes 100 --deterministic

The flags of ``train`` are generated from the fields of :class:`~purejaxppo.config.PPOConfig`
(help = each field's attribute docstring) by a thin argparse layer: argparse lets every flag
default to "not given", which is what the precedence defaults < preset < --config < flags needs,
and lets every bad input end as one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import inspect
import os
import shutil
import sys
import textwrap
import time
import typing
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from purejaxppo.app import distributed

PROG = "purejaxppo"
EXIT_USAGE = 2
DEFAULT_CACHE = Path("~/.cache/purejaxppo/jax").expanduser()


class UsageError(Exception):
    """Bad input; the message is one line naming the problem and the fix."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` (one line) instead of printing usage."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments:"):
            known = [s for a in self._actions for s in a.option_strings]
            close = [c for token in message.split(":", 1)[1].split() if token.startswith("--")
                     for c in difflib.get_close_matches(token.split("=")[0], known, n=1)]
            if close:
                message += f" (did you mean {', '.join(close)}?)"
        raise UsageError(f"{message}; see '{self.prog} --help'")


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string literal under each field) of a dataclass."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(inspect.cleandoc(after.value.value).split())
    return docs


def _add_dataclass_flags(group: argparse._ArgumentGroup, cls: type,
                         skip: tuple[str, ...] = ()) -> None:
    """One flag per field of ``cls``, defaulting to "not given" (absent from the namespace)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind = hints[f.name]
        default = f.default
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
        shown = "none" if shown == "" else shown
        help_text = f"{docs.get(f.name, '')} (default: {shown})".replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is tuple:
            item = typing.get_args(kind)[0]
            kwargs.update(nargs="+", type=item, metavar="MODULE" if item is str else "N")
        elif kind in (int, float, str):
            kwargs.update(type=kind, metavar=kind.__name__.upper())
        else:
            raise TypeError(f"no command-line flag for {cls.__name__}.{f.name}: {kind}")
        group.add_argument("--" + f.name.replace("_", "-"), **kwargs)


def train_parser() -> argparse.ArgumentParser:
    """The parser of ``purejaxppo train``."""
    from purejaxppo.app.presets import RunOptions, presets
    from purejaxppo.config import PPOConfig

    names = ", ".join(presets())
    parser = _Parser(
        prog=f"{PROG} train", allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train PPO on a gymnax environment, every seed in one compiled program.\n\n"
                    "Settings are resolved as: PPOConfig defaults < --preset < --config FILE < "
                    "explicit flags.\nThe preset defaults to the one named after --env.",
        epilog=f"presets: {names}\n\nexamples:\n"
               f"  {PROG} train\n"
               f"  {PROG} train --env Pendulum-v1 --num-seeds 4 --out runs/pendulum\n"
               f"  {PROG} train --env Breakout-MinAtar --checkpoint-every 100\n"
               f"  {PROG} train --resume runs/pendulum")
    run = parser.add_argument_group("run")
    run.add_argument("--preset", metavar="NAME", default=argparse.SUPPRESS,
                     help=f"tuned settings to start from, one of: {names}")
    run.add_argument("--config", metavar="FILE", dest="config_file",
                     help="JSON or YAML file of settings (the keys of config.json); overrides "
                          "the preset, flags override it")
    _add_dataclass_flags(run, RunOptions)
    run.add_argument("--out", metavar="DIR", help="output directory (default: "
                     "runs/<env>-<YYYYmmdd-HHMMSS>); must not exist unless --overwrite")
    run.add_argument("--overwrite", action="store_true",
                     help="replace the --out directory if it holds a previous run")
    run.add_argument("--resume", metavar="DIR",
                     help="continue the run in DIR from its latest checkpoint to its configured "
                          "total (only --checkpoint-every and --no-progress may be given too)")
    run.add_argument("--no-progress", action="store_true",
                     help="no progress bar (it is also off when stdout is not a terminal)")
    _add_dataclass_flags(parser.add_argument_group("PPO settings"), PPOConfig)
    distributed.add_flags(parser)
    return parser


def eval_parser() -> argparse.ArgumentParser:
    """The parser of ``purejaxppo eval``."""
    parser = _Parser(prog=f"{PROG} eval", allow_abbrev=False,
                     description="Evaluate the latest checkpoint of a training run: every seed's "
                                 "policy on fresh episodes, in one jitted call.")
    parser.add_argument("run_dir", metavar="DIR", help="output directory of 'purejaxppo train'")
    parser.add_argument("--episodes", type=int, default=100, metavar="N",
                        help="episodes per seed (default: 100)")
    parser.add_argument("--deterministic", action="store_true",
                        help="act with the most likely action (Discrete) or the mean (Box) "
                             "instead of sampling")
    parser.add_argument("--seed", type=int, default=0, metavar="N",
                        help="seed of the evaluation episodes (default: 0)")
    parser.add_argument("--max-steps", type=int, metavar="N",
                        help="stop after N steps even if episodes are running "
                             "(default: the env's time limit)")
    parser.add_argument("--gif", metavar="PATH",
                        help="also render one episode of the first seed's policy to PATH with "
                             "gymnax's Visualizer")
    distributed.add_flags(parser)
    return parser


def _usage() -> str:
    return (f"usage: {PROG} [train] [options]     train (the default command)\n"
            f"       {PROG} eval DIR [options]     evaluate a trained run\n\n"
            f"'{PROG} train --help' and '{PROG} eval --help' list the options.")


def _setup_jax(layout: distributed.Layout) -> None:
    """Compilation cache, this process's devices, and the other processes if any.

    Without process flags: one CPU device per core (``--local-devices`` to choose), so that seeds
    split over the cores (a no-op for GPUs); skipped when JAX already runs (main() called from a
    program that used JAX) or XLA_FLAGS chose. With them: :func:`distributed.initialize`.
    """
    import jax

    # Reuse compiled programs across runs (a program with a progress callback is not cached).
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        jax.config.update("jax_compilation_cache_dir", str(DEFAULT_CACHE))
    try:
        distributed.initialize(layout)
    except RuntimeError as e:  # use_cpu_cores: JAX already runs with other devices
        raise UsageError(str(e).splitlines()[0]) from None


def _out_dir(out: str | None, env: str, overwrite: bool) -> tuple[Path, bool]:
    """``(directory, replace_it)``, validated but not created yet."""
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = Path("runs") / f"{env}-{stamp}"
        path, n = base, 1
        while path.exists():
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        return path, False
    path = Path(out)
    if not path.exists():
        return path, False
    if not path.is_dir():
        raise UsageError(f"--out {out!r} is a file; choose a directory path")
    if not overwrite:
        raise UsageError(f"output directory {out!r} already exists; pass --overwrite to replace "
                         f"it, --resume {out} to continue it, or choose another --out")
    from purejaxppo.app.outputs import CONFIG_FILE

    if any(path.iterdir()) and not (path / CONFIG_FILE).is_file():
        raise UsageError(f"--out {out!r} is not empty and not a purejaxppo run directory (no "
                         f"{CONFIG_FILE}); --overwrite only replaces runs, choose another --out")
    return path, True


def cmd_train(argv: list[str]) -> Callable[[], int]:
    """``purejaxppo train``: validates everything, then returns the training itself."""
    import jax

    from purejaxppo.app import checkpoint, experiment
    from purejaxppo.app.presets import SETTINGS_KEYS, read_settings_file, resolve
    from purejaxppo.parallel import seed_sharding
    from purejaxppo.train import make_agent

    ns = train_parser().parse_args(argv)
    given = {k: v for k, v in vars(ns).items() if k in SETTINGS_KEYS}
    several = jax.process_count() > 1
    if several and ns.resume is None and ns.out is None:
        raise UsageError("with several processes give --out DIR, the same on every process (process "
                         "0 writes there; the others read it to resume)")
    begin = None
    if ns.resume is not None:
        extra = [k for k in given if k != "checkpoint_every"]
        extra += [k for k in ("config_file", "out") if getattr(ns, k) is not None]
        extra += ["overwrite"] if ns.overwrite else []
        if extra:
            flags = ", ".join("--" + k.replace("_file", "").replace("_", "-") for k in extra)
            raise UsageError(f"--resume continues {ns.resume!r} with its saved settings, so it "
                             f"cannot take {flags}; drop them, or start a new run with --out")
        run_dir = Path(ns.resume)
        config, options, preset = experiment.read_run_settings(run_dir)
        if "checkpoint_every" in given:
            options = dataclasses.replace(options, checkpoint_every=given["checkpoint_every"])
        make_agent(config)
        begin = experiment.start(config, options, run_dir, resume=True)
        if distributed.is_writer():
            print(f"Resuming from {checkpoint.latest(run_dir).relative_to(run_dir)} (update "
                  f"{experiment.updates_done(begin)} of {config.num_updates})", flush=True)
        for leftover in checkpoint.incomplete_writes(run_dir) if distributed.is_writer() else []:
            print(f"Ignoring {leftover.relative_to(run_dir)}: an incomplete checkpoint write of "
                  "an interrupted run (removed)", flush=True)
            leftover.unlink()
    else:
        file_settings = read_settings_file(ns.config_file) if ns.config_file else None
        config, options, preset = resolve(given, file_settings)
        make_agent(config)  # unknown envs and unsupported spaces fail here, before any output
        run_dir, replace = _out_dir(ns.out, config.env, ns.overwrite)
    seed_sharding(options.num_seeds)  # several processes: the seeds must split over them

    def execute() -> int:
        writer = distributed.is_writer()
        if ns.resume is None and writer:
            if replace:
                shutil.rmtree(run_dir)
            run_dir.mkdir(parents=True)
            experiment.write_config(run_dir, config, options, preset)
        # Several processes: no bar (a callback in one process's program only would break the
        # programs' agreement); process 0 alone prints and writes.
        tty = not ns.no_progress and sys.stdout.isatty() and not several
        progress = sys.stdout if tty else None
        if not writer:
            outcome = experiment.train(config, options, begin, run_dir, None)
            return 1 if experiment.first_nonfinite(outcome.state, options) else 0
        seeds = f"{options.num_seeds} seed{'s' if options.num_seeds > 1 else ''}"
        verb = "Resuming" if ns.resume else "Training"
        algo = "TRPO" if config.update_rule == "trpo" else "PPO"
        print(f"{verb} {algo} on {config.env} ({f'preset {preset}' if preset else 'no preset'}), "
              f"{seeds} x {config.num_updates:,} updates of {config.batch_size:,} steps -> "
              f"{run_dir}/", flush=True)
        try:
            outcome = experiment.train(config, options, begin, run_dir, progress)
        except KeyboardInterrupt:
            hint = (f"; continue with: {PROG} train --resume {run_dir}"
                    if options.checkpoint_every else "")
            print(f"{PROG}: interrupted{hint}", file=sys.stderr)
            return 130
        summary = experiment.write_outputs(run_dir, config, options, preset, outcome)
        print(experiment.summary_table(summary, run_dir))
        bad = summary["first_nonfinite_update"]
        if bad:
            seed, update = min(bad.items(), key=lambda kv: kv[1])
            print(f"{PROG}: training diverged: update {update} (seed {seed}) produced a NaN/Inf "
                  "loss or parameter; learning stopped there and the last finite parameters were "
                  "kept. Lower --lr or --max-grad-norm, or enable --normalize-obs/--normalize-reward",
                  file=sys.stderr)
            return 1
        return 0

    return execute


def cmd_eval(argv: list[str]) -> Callable[[], int]:
    """``purejaxppo eval``: validates everything, then returns the evaluation itself."""
    import jax

    from purejaxppo.app import evaluate
    from purejaxppo.app.experiment import read_run_settings
    from purejaxppo.parallel import seed_sharding
    from purejaxppo.train import make_agent

    ns = eval_parser().parse_args(argv)
    for name in ("episodes", "max_steps"):
        value = getattr(ns, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} {value} is invalid: must be a positive "
                             "integer")
    config, options, _ = read_run_settings(ns.run_dir)
    make_agent(config)
    seed_sharding(options.num_seeds)  # several processes: the seeds must split over them
    if ns.gif is not None:
        problem = evaluate.gif_requirements(config.env)
        if problem:
            raise UsageError(f"--gif: {problem}")
        if not Path(ns.gif).resolve().parent.is_dir():
            raise UsageError(f"--gif {ns.gif!r}: its directory does not exist; create it first")
    loaded = evaluate.load(ns.run_dir, seed=None)

    def execute() -> int:
        result = evaluate.evaluate_loaded(loaded, ns.episodes, ns.deterministic, ns.seed,
                                          ns.max_steps)
        if not distributed.is_writer():
            return 0
        returns = result.returns
        mode = "deterministic" if ns.deterministic else "stochastic"
        seeds = returns.shape[0]
        print(f"{config.env}: checkpoint at update {loaded.update:,} of {config.num_updates:,}, "
              f"{mode} policy, {ns.episodes} episodes x {seeds} seed{'s' if seeds > 1 else ''}")
        print(f"return {returns.mean():.2f} ± {returns.std():.2f}  (min {returns.min():.2f}, "
              f"max {returns.max():.2f}, mean length {result.lengths.mean():.1f})")
        if seeds > 1:
            print("per seed: " + ", ".join(f"{r:.2f}" for r in returns.mean(axis=1)))
        unfinished = int((~result.finished).sum())
        if unfinished:
            print(f"note: {unfinished} episodes were still running after the step limit; their "
                  "returns are partial")
        if ns.gif is not None:
            ret, length = evaluate.render_gif(loaded, ns.gif, jax.random.key(ns.seed),
                                              ns.deterministic, ns.max_steps)
            print(f"wrote {ns.gif}: one episode of seed {options.seed}'s policy, return "
                  f"{ret:.2f}, {length} steps")
        return 0

    return execute


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``purejaxppo`` console script; returns the exit code.

    Every input problem is found before any work starts and ends as one line on stderr with exit
    code 2; errors after that point are bugs and keep their traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv and argv[0] == "eval":
        command, args = cmd_eval, argv[1:]
    elif argv and argv[0] == "train":
        command, args = cmd_train, argv[1:]
    elif argv and not argv[0].startswith("-"):
        close = difflib.get_close_matches(argv[0], ["train", "eval"], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"{PROG}: error: unknown command {argv[0]!r}{hint}; the commands are train and "
              "eval", file=sys.stderr)
        return EXIT_USAGE
    else:
        command, args = cmd_train, argv
    # Warnings raised while checking the input (e.g. total_timesteps not a multiple of the batch)
    # are shown only if the input is valid, so that an error stays the only line on stderr.
    layout = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if not any(a in ("-h", "--help") for a in args):
                layout = distributed.parse(args)
                _setup_jax(layout)
            execute = command(args)
        # ValueError covers PPOConfig's and make_env's checks (one line each) and the subclasses
        # SettingsError, CheckpointError and distributed.SetupError.
        except (UsageError, ValueError) as e:
            lines = str(e).strip().splitlines() or [type(e).__name__]
            print(f"{PROG}: error: {lines[0]}", file=sys.stderr)
            if layout is not None and distributed.several(layout):
                distributed.leave(EXIT_USAGE)  # the others may never reach JAX's exit barrier
            return EXIT_USAGE
    if layout is not None and distributed.several(layout):
        distributed.barrier("purejaxppo-input-checked")  # before process 0 writes anything
    for w in caught:
        if distributed.is_writer():
            print(f"{PROG}: warning: {w.message}", file=sys.stderr)
    return execute()


if __name__ == "__main__":
    sys.exit(main())
