"""The ``purejaxppo`` command: ``train`` (the default), ``eval`` and ``search``.

    purejaxppo                                   # CartPole-v1, its preset, into runs/<env>-<time>
    purejaxppo train --env Acrobot-v1 --num-seeds 4 --lr 1e-3
    purejaxppo train --resume runs/Acrobot-v1-20260101-120000
    purejaxppo eval runs/Acrobot-v1-20260101-120000 --episodes 100 --deterministic
    purejaxppo search --method pbt --env Acrobot-v1 --population 8 --space space.json

The flags of ``train`` are generated from the fields of :class:`~purejaxppo.config.PPOConfig`
(help = each field's attribute docstring) by a thin argparse layer: argparse lets every flag
default to "not given", which is what the precedence defaults < preset < --config < flags needs,
and lets every bad input end as one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import difflib
import inspect
import json
import os
import signal
import sys
import tempfile
import textwrap
import time
import typing
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from purejaxppo.app import distributed

if TYPE_CHECKING:
    from purejaxppo.app.presets import RunOptions

PROG = "purejaxppo"
EXIT_USAGE = 2
_SIGNAL = [signal.SIGINT]
"""The signal that interrupted this command: Ctrl-C's SIGINT, or SIGTERM (see :func:`main`)."""


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM handler: stops the command as Ctrl-C does (what finished is saved)."""
    _SIGNAL[0] = signal.Signals(signum)
    raise KeyboardInterrupt


def _interrupted_code() -> int:
    """The shell's exit status of a command stopped by a signal: 128 + its number."""
    return 128 + int(_SIGNAL[0])


_SHOWN: set[str] = set()
"""Warnings already shown to the user by this command (each is shown once)."""
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
                         shown_defaults: dict[str, Any] | None = None,
                         skip: tuple[str, ...] = ()) -> None:
    """One flag per field of ``cls``, defaulting to "not given" (absent from the namespace).

    The help shows ``shown_defaults[name]`` (e.g. the preset's value) where given, else the
    field's default.
    """
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    shown_defaults = shown_defaults or {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind = hints[f.name]
        default = shown_defaults.get(f.name, f.default)
        if isinstance(default, list):
            default = tuple(default)
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


def _help_preset(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """The preset whose values ``--help`` shows: ``--preset``'s, else ``--env``'s, else the
    default environment's; ``(name, its settings)``; without a preset ``("", {})``, or
    ``("", {"env": ...})`` when ``--env`` names one."""
    from purejaxppo.app.presets import DEFAULT_ENV, presets

    def value(flag: str) -> str | None:
        for i, token in enumerate(argv):
            if token == flag and i + 1 < len(argv):
                return argv[i + 1]
            if token.startswith(flag + "="):
                return token.split("=", 1)[1]
        return None

    table = presets()
    name = value("--preset") or value("--env") or DEFAULT_ENV
    if name in table:
        return name, {**table[name].config, "env": table[name].env}
    return "", {"env": name} if value("--env") else {}


def train_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of ``purejaxppo train`` (its help shows the defaults of the preset that
    ``argv``'s ``--preset``/``--env`` selects)."""
    from purejaxppo.app.presets import RunOptions, presets
    from purejaxppo.config import PPOConfig

    names = ", ".join(presets())
    preset_name, preset_values = _help_preset(list(argv or []))
    shown = (f"Defaults shown are those of preset {preset_name}" if preset_name
             else "Defaults shown are PPOConfig's (no preset for this environment)")
    parser = _Parser(
        prog=f"{PROG} train", allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train PPO (or TRPO) on an environment, every seed in one compiled program.\n\n"
                    "Settings are resolved as: PPOConfig defaults < --preset < --config FILE < "
                    "explicit flags.\nThe preset defaults to the one named after --env. "
                    f"{shown}; '{PROG} train --env ID --help' shows another environment's.",
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
    run.add_argument("--seed-index", type=int, metavar="I",
                     help="train only seed I of the --num-seeds run (0 is its first), bit for bit "
                          "as that run trains it on this machine with the same --local-devices; "
                          "it runs beside as many copies of itself as seeds were computed with it "
                          "(its group of at most 8 on per-core CPU devices), see the README's "
                          "'Reproducing one seed'")
    run.add_argument("--out", metavar="DIR", help="output directory (default: "
                     "runs/<env>-<YYYYmmdd-HHMMSS>); must not exist unless --overwrite")
    run.add_argument("--overwrite", action="store_true",
                     help="replace the --out directory if it holds a previous run")
    run.add_argument("--resume", metavar="DIR",
                     help="continue the run in DIR from its latest checkpoint to its configured "
                          "total (only --checkpoint-every, --keep-checkpoints, --tensorboard, "
                          "--wandb and --no-progress may be given too)")
    run.add_argument("--no-progress", action="store_true",
                     help="no progress bar (it is also off when stdout is not a terminal)")
    _add_dataclass_flags(parser.add_argument_group("PPO settings"), PPOConfig, preset_values)
    distributed.add_flags(parser)
    return parser


def search_parser() -> argparse.ArgumentParser:
    """The parser of ``purejaxppo search``."""
    from purejaxppo.app.presets import RunOptions, presets
    from purejaxppo.config import PPOConfig

    parser = _Parser(
        prog=f"{PROG} search", allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Hyperparameter search in one compiled program: random search (every sample "
                    "x seed at once) or population-based training (Jaderberg et al. 2017).\n\n"
                    "Settings resolve as for train; the space file overrides the searched ones.",
        epilog="space file (JSON or YAML), e.g.:\n"
               '  {"lr": ["log_uniform", 1e-5, 1e-2], "ent_coef": ["uniform", 0.0, 0.05],\n'
               '   "policy_loss": ["choice", ["ppo_clip", "kl_penalty"]]}\n\n'
               f"examples:\n  {PROG} search --method random --env Acrobot-v1 --population 16 "
               "--num-seeds 2 --space space.json\n"
               f"  {PROG} search --method pbt --env Pendulum-v1 --population 8 --ready-every 20 "
               "--space space.yaml")
    search = parser.add_argument_group("search")
    search.add_argument("--method", choices=("random", "pbt"), required=True,
                        help="random search or population-based training")
    search.add_argument("--space", metavar="FILE", required=True,
                        help="JSON or YAML file mapping hyperparameters (and policy_loss) to "
                             "[log_uniform, lo, hi], [uniform, lo, hi] or [choice, [values]]")
    search.add_argument("--population", type=int, metavar="N", default=8,
                        help="random: samples drawn (each trained with --num-seeds seeds); pbt: "
                             "members (default: 8)")
    search.add_argument("--ready-every", type=int, metavar="N",
                        help="pbt: updates between exploit steps (default: a tenth of the run)")
    search.add_argument("--fraction", type=float, metavar="F",
                        help="pbt: the bottom fraction copies the top fraction (default: 0.25)")
    search.add_argument("--resample-prob", type=float, metavar="P",
                        help="pbt: probability that explore redraws a value instead of "
                             "perturbing it x0.8/x1.25 (default: 0.2)")
    run = parser.add_argument_group("run")
    run.add_argument("--preset", metavar="NAME", default=argparse.SUPPRESS,
                     help=f"tuned settings to start from, one of: {', '.join(presets())}")
    run.add_argument("--config", metavar="FILE", dest="config_file",
                     help="JSON or YAML file of settings (the keys of config.json)")
    _add_dataclass_flags(run, RunOptions, skip=("checkpoint_every", "keep_checkpoints",
                                                "batched_as"))
    run.add_argument("--out", metavar="DIR", help="output directory (default: "
                     "runs/<env>-<YYYYmmdd-HHMMSS>); must not exist unless --overwrite")
    run.add_argument("--overwrite", action="store_true",
                     help="replace the --out directory if it holds a previous run")
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
                        help="also render one episode of the first evaluated seed's policy to "
                             "PATH (a .gif file), drawn by the environment's own renderer")
    parser.add_argument("--checkpoint", type=int, metavar="N",
                        help="evaluate the checkpoint taken after N updates (default: the latest)")
    parser.add_argument("--seed-index", type=int, metavar="I",
                        help="evaluate only the run's I-th seed (0 is its first; default: all)")
    parser.add_argument("--json", action="store_true",
                        help="print the result as one JSON object instead of text")
    distributed.add_flags(parser)
    return parser


def _version() -> str:
    from purejaxppo import __version__

    return f"{PROG} {__version__}"


def _usage() -> str:
    return (f"usage: {PROG} [train] [options]     train (the default command)\n"
            f"       {PROG} eval DIR [options]     evaluate a trained run\n"
            f"       {PROG} search [options]       random search or population-based training\n\n"
            f"'{PROG} train --help', '{PROG} eval --help' and '{PROG} search --help' list the "
            "options.")


_LAYOUT = distributed.Layout(coordinator=None, num_processes=None, process_id=None,
                             local_devices=None, cluster=False, join_timeout=120,
                             heartbeat_timeout=60)
"""The process flags of the command being run (set by :func:`main`)."""


def _jax_started() -> bool:
    return "jax" in sys.modules


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


def _default_out(env: str) -> Path:
    """``runs/<env>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``, ... if taken)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{env.replace(':', '-').replace('/', '-')}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def _out_dir(out: str | None, env: str, overwrite: bool, resumable: bool = True
             ) -> tuple[Path, bool]:
    """``(directory, replace_it)``, validated but not created yet (``resumable``: the command
    has ``--resume``)."""
    if out is None:
        return _default_out(env), False
    path = Path(out)
    if not out.strip() or path.resolve() in (Path.cwd().resolve(), *Path.cwd().resolve().parents):
        raise UsageError(f"--out {out!r} is the current directory or one above it; name a new "
                         "directory for the run's outputs")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise UsageError(f"--out {out!r}: {str(parent)!r} is a file, not a directory; "
                             "choose another --out")
    if not path.exists():
        return path, False
    if not path.is_dir():
        raise UsageError(f"--out {out!r} is a file; choose a directory path")
    if not overwrite:
        from purejaxppo.app.outputs import CHECKPOINT_DIR, LATEST

        # Only a run with a checkpoint can be resumed (one killed before its first has none).
        resumable = resumable and (path / CHECKPOINT_DIR / LATEST).is_file()
        resume = f", --resume {out} to continue it," if resumable else ""
        raise UsageError(f"output directory {out!r} already exists; pass --overwrite to replace "
                         f"it{resume} or choose another --out")
    from purejaxppo.app.outputs import CONFIG_FILE

    if any(path.iterdir()) and not (path / CONFIG_FILE).is_file():
        raise UsageError(f"--out {out!r} is not empty and not a purejaxppo run directory (no "
                         f"{CONFIG_FILE}); --overwrite only replaces runs, choose another --out")
    return path, True


UNUSED_SETTINGS = {"trpo": ("policy_loss", "ent_coef", "kl_target", "kl_beta_init"),
                   "ppo": ("max_kl",)}
"""Settings an update rule does not read: TRPO maximises the importance-ratio surrogate under
its KL limit with no entropy bonus (:mod:`purejaxppo.trpo`); PPO has no KL limit."""


def _warn_unused(update_rule: str, named: set[str]) -> None:
    """Warns when the user named settings that ``update_rule`` ignores."""
    unused = [k for k in UNUSED_SETTINGS.get(update_rule, ()) if k in named]
    if unused:
        flags = ", ".join("--" + k.replace("_", "-") for k in unused)
        one = len(unused) == 1
        warnings.warn(f"{flags} {'is' if one else 'are'} not used by --update-rule "
                      f"{update_rule}; drop {'it' if one else 'them'}", stacklevel=2)


def _check_writable(path: Path, flag: str) -> None:
    """Raises a :class:`UsageError` unless a file can be written at ``path`` (tried with a
    scratch file beside it, removed at once)."""
    if path.is_dir():
        raise UsageError(f"{flag} {str(path)!r} is a directory; name a file in it")
    try:
        with tempfile.NamedTemporaryFile(dir=path.resolve().parent, prefix=f".{path.name}.",
                                         suffix=".check"):
            pass
    except OSError as e:
        raise UsageError(f"{flag} {str(path)!r}: its directory cannot be written "
                         f"({e.strerror or e}); choose another path") from None


def _algorithm(config: Any) -> str:
    """``"TRPO"``, or ``"PPO (loss)"``."""
    return "TRPO" if config.update_rule == "trpo" else f"PPO ({config.policy_loss})"


RESUME_OPTIONS = ("checkpoint_every", "keep_checkpoints", "tensorboard", "wandb")
"""Run options ``--resume`` may change (the others are the run's own)."""


def _one_seed_of(options: RunOptions, index: int, several: bool) -> RunOptions:
    """The options that train seed ``index`` of ``options``' seeds alone, bit for bit as the
    multi-seed run trains it on these devices (:data:`RunOptions.batched_as`)."""
    import jax

    from purejaxppo.parallel import dividing_devices, group_of, runs_per_batch

    n = options.num_seeds
    if several:
        raise UsageError("--seed-index trains one seed in one process; run it without "
                         "--coordinator/--num-processes")
    if options.batched_as != 1:
        raise UsageError(f"--seed-index: the settings already train one seed as a copy "
                         f"(batched_as={options.batched_as}); give the original run's settings")
    if not 0 <= index < n:
        raise UsageError(f"--seed-index {index} is out of range: the run has {n} "
                         f"seed{'s' if n > 1 else ''} (0 .. {n - 1}); give its --num-seeds too")
    per_device = n // len(dividing_devices(n, jax.local_devices()))
    # As many copies as seeds were computed side by side with this one (its device's, or its
    # group's: experiment.make_seeds_run): XLA batches a seed's products and reductions at that
    # width, and other widths round some of them differently (on XLA:CPU a seed's explained
    # variance differed beside 1 copy and beside 6, its training did not; at 16 seeds and more
    # its parameters did too).
    copies = group_of(index % per_device, per_device, runs_per_batch())
    return dataclasses.replace(options, seed=options.seed + index, num_seeds=1,
                               batched_as=copies)


def cmd_train(argv: list[str]) -> Callable[[], int]:
    """``purejaxppo train``: validates everything, then returns the training itself."""
    from purejaxppo.app.presets import SETTINGS_KEYS, read_settings_file, resolve

    ns = train_parser(argv).parse_args(argv)
    given = {k: v for k, v in vars(ns).items() if k in SETTINGS_KEYS}
    if ns.resume is not None:
        extra = [k for k in given if k not in RESUME_OPTIONS]
        extra += [k for k in ("config_file", "out") if getattr(ns, k) is not None]
        extra += ["overwrite"] if ns.overwrite else []
        extra += ["seed_index"] if ns.seed_index is not None else []
        if extra:
            flags = ", ".join("--" + k.replace("_file", "").replace("_", "-") for k in extra)
            raise UsageError(f"--resume continues {ns.resume!r} with its saved settings, so it "
                             f"cannot take {flags}; drop them, or start a new run with --out")
    from purejaxppo.app import loggers as loggers_lib

    loggers_lib.check_available(given.get("tensorboard", False), given.get("wandb", False))
    _setup_jax(_LAYOUT)
    import jax

    from purejaxppo.app import checkpoint, experiment, rundir
    from purejaxppo.app.presets import settings_dict
    from purejaxppo.parallel import seed_sharding
    from purejaxppo.train import make_agent

    several = jax.process_count() > 1
    writer = distributed.is_writer()
    if several and ns.resume is None and ns.out is None:
        raise UsageError("with several processes give --out DIR, the same on every process "
                         "(process 0 writes there; the others read it to resume)")
    if ns.resume is not None:
        run_dir = Path(ns.resume)
        config, options, preset = experiment.read_run_settings(run_dir)
        for name in RESUME_OPTIONS:
            if name in given:
                options = dataclasses.replace(options, **{name: given[name]})
        make_agent(config)
        done = checkpoint.restored_update(run_dir)
        if done >= config.num_updates:
            if writer:
                print(f"{run_dir} has finished all {config.num_updates:,} updates; nothing to "
                      "resume (its outputs are left as they are)")
            return lambda: 0
        experiment.check_memory(config, options.num_seeds * options.batched_as)
        seed_sharding(options.num_seeds)  # several processes: the seeds must split over them
        held = rundir.hold(run_dir) if writer else None
    else:
        file_settings = read_settings_file(ns.config_file) if ns.config_file else None
        config, options, preset = resolve(given, file_settings)
        # A settings file's value names a setting only where it is not the default (the preset's
        # or PPOConfig's): a run's config.json holds every field, and replaying it must not warn.
        from purejaxppo.app.presets import get_preset
        from purejaxppo.config import PPOConfig

        defaults = {f.name: f.default for f in dataclasses.fields(PPOConfig)}
        defaults.update(get_preset(preset).config if preset else {})
        changed = {k for k, v in (file_settings or {}).items() if defaults.get(k, v) != v}
        _warn_unused(config.update_rule, {*given, *changed})
        make_agent(config)  # unknown envs and unsupported spaces fail here, before any output
        if ns.seed_index is not None:
            options = _one_seed_of(options, ns.seed_index, several)
        experiment.check_memory(config, options.num_seeds * options.batched_as)
        seed_sharding(options.num_seeds)  # several processes: the seeds must split over them
        # Process 0 checks and claims the output directory; the others only name it.
        run_dir, replace = (_out_dir(ns.out, config.env, ns.overwrite) if writer
                            else (Path(ns.out), False))
        held = rundir.claim(run_dir, replace) if writer else None

    def execute() -> int:
        try:
            return _train()
        except BaseException:
            # A failure while training (an environment's error, a full disk), or an interrupt
            # before the training loop (while starting or compiling): a new run keeps what it
            # checkpointed (resumable) and otherwise leaves nothing; a resumed run is left as it
            # was.
            if held is not None and ns.resume is None:
                if checkpoint.all_checkpoints(held.work):
                    rundir.commit(held)
                else:
                    rundir.abandon(held)
            raise
        finally:
            if held is not None:
                rundir.release(held)

    def _train() -> int:
        # Process 0 writes (into its claimed directory); the others read a resumed run's
        # checkpoint from the same path and take part in every gather.
        work = held.work if held is not None else run_dir
        final = held.final if held is not None else run_dir
        begin = None
        if ns.resume is None:
            if writer:
                experiment.write_config(work, config, options, preset)
        else:
            begin = experiment.start(config, options, work, resume=True)
            if writer:
                print(f"Resuming from {checkpoint.latest(work).relative_to(work)} (update "
                      f"{experiment.updates_done(begin)} of {config.num_updates})", flush=True)
                for leftover in checkpoint.incomplete_writes(work):
                    print(f"Ignoring {leftover.relative_to(work)}: an incomplete checkpoint "
                          "write of an interrupted run (removed)", flush=True)
                    leftover.unlink()
        # Several processes: process 0 alone prints and writes.
        tty = not ns.no_progress and sys.stdout.isatty() and writer
        progress = sys.stdout if tty else None
        if not writer:
            outcome = experiment.train(config, options, begin, work, None)
            return 1 if experiment.first_nonfinite(outcome.state, options) else 0
        seeds = f"{options.num_seeds} seed{'s' if options.num_seeds > 1 else ''}"
        if options.batched_as > 1:
            seeds += f" (batched with {options.batched_as - 1} cop" \
                     f"{'ies' if options.batched_as > 2 else 'y'} of itself)"
        verb = "Resuming" if ns.resume else "Training"
        print(f"{verb} {_algorithm(config)} on {config.env} "
              f"({f'preset {preset}' if preset else 'no preset'}), {seeds} x "
              f"{config.num_updates:,} updates of {config.batch_size:,} steps -> "
              f"{final}/", flush=True)
        loggers = loggers_lib.open_loggers(work, experiment.seed_list(options),
                                           settings_dict(config, options, preset),
                                           options.tensorboard, options.wandb)
        try:
            outcome = experiment.train(config, options, begin, work, progress, loggers)
        except experiment.Interrupted as stop:
            if not stop.saved:  # nothing kept: as an interrupt before training (execute, main)
                raise KeyboardInterrupt from None
            rundir.commit(held)
            print(f"{PROG}: interrupted after {stop.done:,} of {config.num_updates:,} "
                  f"updates, saved; continue with: {PROG} train --resume {final}",
                  file=sys.stderr)
            return _interrupted_code()
        finally:
            for logger in loggers:
                logger.close()
        summary = experiment.write_outputs(work, config, options, preset, outcome)
        rundir.commit(held)
        print(experiment.summary_table(summary, final))
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


def cmd_search(argv: list[str]) -> Callable[[], int]:
    """``purejaxppo search``: validates everything, then returns the search itself."""
    from purejaxppo.app import search as app_search
    from purejaxppo.app.presets import SETTINGS_KEYS, read_settings_file, resolve
    from purejaxppo.search import check_pbt_args, check_space
    from purejaxppo.train import make_agent

    ns = search_parser().parse_args(argv)
    given = {k: v for k, v in vars(ns).items() if k in SETTINGS_KEYS}
    _setup_jax(_LAYOUT)
    from purejaxppo.app import experiment, rundir

    file_settings = read_settings_file(ns.config_file) if ns.config_file else None
    config, options, preset = resolve(given, file_settings)
    if options.batched_as != 1:
        raise UsageError(f"batched_as={options.batched_as} is for training one seed "
                         "(train --seed-index); remove it from the settings file")
    make_agent(config)
    space = app_search.read_space(ns.space)
    try:
        check_space(config, space)
    except ValueError as e:
        raise UsageError(f"--space {ns.space}: {e}") from None
    if ns.population < 1:
        raise UsageError(f"--population {ns.population} is invalid: must be a positive integer")
    pbt_flags = {"ready_every": ns.ready_every, "fraction": ns.fraction,
                 "resample_prob": ns.resample_prob}
    if ns.method == "pbt":
        if options.num_seeds != 1:
            raise UsageError(f"--num-seeds {options.num_seeds}: a PBT population's members each "
                             "have their own seed; set the population with --population")
        defaults = {"ready_every": app_search.default_ready_every(config), "fraction": 0.25,
                    "resample_prob": 0.2}
        pbt_args = {k: defaults[k] if v is None else v for k, v in pbt_flags.items()}
        try:
            check_pbt_args(config, ns.population, **pbt_args)
        except ValueError as e:
            flag = str(e).split("=", 1)[0].replace("_", "-")
            raise UsageError(f"--{flag} {str(e).split('=', 1)[1]}") from None
    else:
        given_pbt = ["--" + k.replace("_", "-") for k, v in pbt_flags.items() if v is not None]
        if given_pbt:
            raise UsageError(f"{', '.join(given_pbt)} only apply to --method pbt; drop them")
        pbt_args = {"ready_every": 0, "fraction": 0.0, "resample_prob": 0.0}
    settings = app_search.SearchSettings(method=ns.method, space=space,
                                         population=ns.population, **pbt_args)
    runs_at_once = ns.population * (options.num_seeds if ns.method == "random" else 1)
    experiment.check_memory(config, runs_at_once, "--population"
                            + (", --num-seeds" if ns.method == "random" else ""))
    if distributed.several(_LAYOUT) and ns.out is None:
        raise UsageError("with several processes give --out DIR, the same on every process "
                         "(process 0 writes there)")
    writer = distributed.is_writer()
    run_dir, replace = (_out_dir(ns.out, config.env, ns.overwrite, resumable=False) if writer
                        else (Path(ns.out or "."), False))
    held = rundir.claim(run_dir, replace) if writer else None

    def execute() -> int:
        if held is None:  # another process than 0: take part in the program, write nothing
            app_search.run(config, options, settings)
            return 0
        code = 1
        try:
            code = _search(held.work)
            return code
        finally:  # a search that fails (or is interrupted) leaves no directory behind
            if code == 0:
                rundir.commit(held)
            else:
                rundir.abandon(held)
            rundir.release(held)

    def _search(run_dir: Path) -> int:
        app_search.start_outputs(run_dir, config, options, preset)
        runs = (f"{ns.population} member{'s' if ns.population > 1 else ''}"
                if ns.method == "pbt" else
                f"{ns.population} samples x {options.num_seeds} seed"
                f"{'s' if options.num_seeds > 1 else ''}")
        print(f"Searching ({'PBT' if ns.method == 'pbt' else 'random search'}) "
              f"{_algorithm(config)} on {config.env} "
              f"({f'preset {preset}' if preset else 'no preset'}), {runs} x "
              f"{config.num_updates:,} updates of {config.batch_size:,} steps -> {held.final}/",
              flush=True)
        searched = app_search.run(config, options, settings)  # Ctrl-C: main says it
        summary = app_search.write_outputs(run_dir, config, options, preset, settings, searched)
        print(app_search.summary_table(summary, held.final))
        return 0

    return execute


def cmd_eval(argv: list[str]) -> Callable[[], int]:
    """``purejaxppo eval``: validates everything, then returns the evaluation itself."""
    ns = eval_parser().parse_args(argv)
    for name in ("episodes", "max_steps", "checkpoint"):
        value = getattr(ns, name)
        if value is not None and not 1 <= value <= 2**31 - 1:
            raise UsageError(f"--{name.replace('_', '-')} {value} is invalid: must be a positive "
                             "integer of at most 2,147,483,647 (int32 on device)")
    if ns.seed < 0 or ns.seed > 2**32 - 1:
        raise UsageError(f"--seed {ns.seed} is invalid: must be in 0 .. 4294967295")
    if ns.gif is not None and Path(ns.gif).suffix.lower() != ".gif":
        raise UsageError(f"--gif {ns.gif!r} must name a .gif file (e.g. {Path(ns.gif).stem}.gif)")
    _setup_jax(_LAYOUT)
    import jax

    from purejaxppo.app import evaluate, experiment
    from purejaxppo.app.experiment import read_run_settings
    from purejaxppo.parallel import seed_sharding
    from purejaxppo.train import make_agent

    config, options, _ = read_run_settings(ns.run_dir)
    agent = make_agent(config)
    if ns.seed_index is not None and not 0 <= ns.seed_index < options.num_seeds:
        raise UsageError(f"--seed-index {ns.seed_index} is out of range: the run has "
                         f"{options.num_seeds} seed{'s' if options.num_seeds > 1 else ''} "
                         f"(0 .. {options.num_seeds - 1})")
    seed_sharding(options.num_seeds)  # several processes: the seeds must split over them
    if ns.gif is not None:
        problem = evaluate.gif_requirements(agent.env)
        if problem:
            raise UsageError(f"--gif: {problem}")
        if not Path(ns.gif).resolve().parent.is_dir():
            raise UsageError(f"--gif {ns.gif!r}: its directory does not exist; create it first")
        _check_writable(Path(ns.gif), "--gif")
    evaluated = 1 if ns.seed_index is not None else options.num_seeds
    experiment.check_eval_memory(config, ns.episodes * evaluated)
    loaded = evaluate.load(ns.run_dir, seed=None, update=ns.checkpoint)
    if ns.seed_index is not None:
        loaded = loaded._replace(params=jax.tree.map(lambda x: x[ns.seed_index:ns.seed_index + 1],
                                                     loaded.params),
                                 obs_stats=jax.tree.map(
                                     lambda x: x[ns.seed_index:ns.seed_index + 1],
                                     loaded.obs_stats))
    seed_numbers = ([options.seed + ns.seed_index] if ns.seed_index is not None
                    else list(range(options.seed, options.seed + options.num_seeds)))

    def execute() -> int:
        result = evaluate.evaluate_loaded(loaded, ns.episodes, ns.deterministic, ns.seed,
                                          ns.max_steps)
        if not distributed.is_writer():
            return 0
        returns = result.returns
        mode = "deterministic" if ns.deterministic else "stochastic"
        seeds = returns.shape[0]
        unfinished = int((~result.finished).sum())
        if ns.json:
            print(json.dumps({
                "env": config.env, "checkpoint_update": loaded.update,
                "num_updates": config.num_updates, "policy": mode, "episodes": ns.episodes,
                "seeds": seed_numbers, "return_mean": float(returns.mean()),
                "return_std": float(returns.std()),
                "return_per_seed": [float(r) for r in returns.mean(axis=1)],
                "length_mean": float(result.lengths.mean()), "unfinished_episodes": unfinished,
            }))
        else:
            print(f"{config.env}: checkpoint at update {loaded.update:,} of "
                  f"{config.num_updates:,}, {mode} policy, {ns.episodes} episodes x {seeds} "
                  f"seed{'s' if seeds > 1 else ''}")
            print(f"return {returns.mean():.2f} ± {returns.std():.2f}  (min {returns.min():.2f}, "
                  f"max {returns.max():.2f}, mean length {result.lengths.mean():.1f})")
            if seeds > 1:
                print("per seed: " + ", ".join(f"{r:.2f}" for r in returns.mean(axis=1)))
            if unfinished:
                print(f"note: {unfinished} episodes were still running after the step limit; "
                      "their returns are partial")
        if ns.gif is not None:
            ret, length = evaluate.render_gif(loaded, ns.gif, jax.random.key(ns.seed),
                                              ns.deterministic, ns.max_steps)
            print(f"wrote {ns.gif}: one episode of seed {seed_numbers[0]}'s policy, return "
                  f"{ret:.2f}, {length} steps", file=sys.stderr if ns.json else sys.stdout)
        return 0

    return execute


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``purejaxppo`` console script; returns the exit code.

    ``--help``, ``--version`` and argument errors are answered before JAX is imported. Every
    input problem is found before any work starts and ends as one line on stderr with exit
    code 2; a failure while running is one line with exit code 1.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    _SIGNAL[0] = signal.SIGINT
    _SHOWN.clear()
    previous = None
    with contextlib.suppress(ValueError):  # only the main thread may set a handler
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _main(argv)
    except KeyboardInterrupt:
        # Ctrl-C or SIGTERM outside the places that save work (the training loop saves the
        # last finished chunk itself): nothing of this command was kept.
        print(f"{PROG}: interrupted; nothing new was saved", file=sys.stderr)
        code = _interrupted_code()
        if distributed.several(_LAYOUT) and _jax_started():
            distributed.leave(code)
        return code
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str]) -> int:
    """:func:`main` without its signal handling."""
    if argv and argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv and argv[0] in ("-V", "--version"):
        print(_version())
        return 0
    if argv and argv[0] == "eval":
        command, args = cmd_eval, argv[1:]
    elif argv and argv[0] == "train":
        command, args = cmd_train, argv[1:]
    elif argv and argv[0] == "search":
        command, args = cmd_search, argv[1:]
    elif argv and not argv[0].startswith("-"):
        close = difflib.get_close_matches(argv[0], ["train", "eval", "search"], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"{PROG}: error: unknown command {argv[0]!r}{hint}; the commands are train, eval "
              "and search", file=sys.stderr)
        return EXIT_USAGE
    else:
        command, args = cmd_train, argv
    # Warnings raised while checking the input (e.g. total_timesteps not a multiple of the batch)
    # are shown only if the input is valid, so that an error stays the only line on stderr.
    # Libraries' deprecation notices (an environment suite's dependencies warn about their own
    # dependencies when imported) are left out, as Python's default filters leave them out for
    # code outside __main__, unless the user asked for them with -W or PYTHONWARNINGS.
    global _LAYOUT
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if not sys.warnoptions:
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", PendingDeprecationWarning)
        try:
            # The process flags (no JAX yet); each command parses its own arguments, then
            # calls _setup_jax(_LAYOUT) before anything runs on a device.
            _LAYOUT = distributed.parse(args)
            execute = command(args)
        # ValueError covers PPOConfig's and envs.make's checks (one line each) and the
        # subclasses SettingsError, CheckpointError, RunDirError and distributed.SetupError.
        except (UsageError, ValueError, OSError) as e:
            if isinstance(e, OSError):  # a path given by the user (too long, unreadable, ...)
                where = f" ({e.filename})" if getattr(e, "filename", None) else ""
                lines = [f"{e.strerror or e}{where}; check the paths given"]
            else:
                lines = [_first_line(e)]
            _say_error(lines[0])
            if distributed.several(_LAYOUT) and _jax_started():
                distributed.leave(EXIT_USAGE)  # the others may never reach JAX's exit barrier
            return EXIT_USAGE
        except Exception as e:  # e.g. the code of an environment given by --imports
            _say_error(_failure(e))
            if distributed.several(_LAYOUT) and _jax_started():
                distributed.leave(1)
            return 1
    if distributed.several(_LAYOUT):
        distributed.barrier("purejaxppo-input-checked")  # before process 0 writes anything
    if distributed.is_writer():
        for w in caught:
            _show_warning(w.message, w.category, w.filename, w.lineno)
    try:
        with warnings.catch_warnings():  # a warning while running is one line too
            warnings.showwarning = _show_warning
            return execute()
    except (OSError, MemoryError) as e:  # the disk filled up, a file vanished, memory ran out
        text = getattr(e, "strerror", None) or str(e) or type(e).__name__
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"{PROG}: error: {text}{where}", file=sys.stderr)
        return 1
    except Exception as e:
        from purejaxppo.app.checkpoint import CheckpointError

        if isinstance(e, CheckpointError):
            # A checkpoint is restored only once the run starts: one that does not fit its
            # config is bad input like those found before (nothing has been written yet).
            _say_error(_first_line(e))
            code = EXIT_USAGE
        else:
            lost = distributed.peer_lost(e) if distributed.several(_LAYOUT) else None
            _say_error(lost or _failure(e))
            code = 1
        if distributed.several(_LAYOUT):
            distributed.leave(code)
        return code


def _say_error(line: str) -> None:
    """``purejaxppo: error: LINE`` on stderr; with several processes, only if this process's
    watchdog has not said its own line already (one line per process, never two)."""
    if distributed.several(_LAYOUT):
        distributed.say_error(line)
    else:
        print(f"{PROG}: error: {line}", file=sys.stderr)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """``warnings.showwarning`` of a command: ``purejaxppo: warning: MESSAGE``, each message
    once (a setting's warning, raised while checking the input, may be raised again while
    running)."""
    if distributed.is_writer() and str(message) not in _SHOWN:  # process 0 speaks
        _SHOWN.add(str(message))
        print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _failure(e: BaseException) -> str:
    """One line for an error raised while running: what, and the innermost place it came from
    (most often the code of an environment or network given by --imports); set
    PUREJAXPPO_TRACEBACK=1 for the whole traceback."""
    import traceback

    if os.environ.get("PUREJAXPPO_TRACEBACK"):
        traceback.print_exception(e)
    frames = traceback.extract_tb(e.__traceback__)
    where = f" (raised at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return (f"{type(e).__name__}: {_first_line(e)}{where}; PUREJAXPPO_TRACEBACK=1 shows the "
            "whole traceback")


def run() -> NoReturn:
    """The ``purejaxppo`` console script: :func:`main`, then exit with its code.

    After an interrupt the process ends at once (``os._exit``, its output flushed; everything it
    saved is already written and closed): XLA cannot cancel a computation, and one still running
    on its threads when the interpreter tears down can abort the process.
    """
    code = main()
    if code in (128 + signal.SIGINT, 128 + signal.SIGTERM) and _jax_started():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
