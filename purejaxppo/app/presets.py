"""Presets and settings files: how a run's settings are put together before anything is trained.

A run is a :class:`~purejaxppo.config.PPOConfig` plus :class:`RunOptions` (seeds and checkpoint
cadence). They are resolved in one order, each layer overriding the one before::

    PPOConfig defaults < preset (presets.json) < --config FILE < explicit flags

Every problem is raised as :class:`SettingsError`, a ``ValueError`` whose message is one line
naming the problem and the fix (the command line prints it as is).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.util
import json
import re
from pathlib import Path
from typing import Any, NamedTuple

from purejaxppo.config import PPOConfig

PRESETS_FILE = Path(__file__).with_name("presets.json")
DEFAULT_ENV = "CartPole-v1"


class SettingsError(ValueError):
    """A bad setting, preset, settings file or run directory; the message is one line."""


MAX_SEED = 2**32 - 1
"""Largest seed: ``jax.random.key`` keeps 32 bits of it."""


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a config is run: which seeds, and how often the train state is checkpointed."""

    seed: int = 0
    """Seed of the first run; seed i of ``num_seeds`` uses ``jax.random.key(seed + i)``."""
    num_seeds: int = 1
    """Independent seeds trained at once (one vmapped program, split over the devices)."""
    checkpoint_every: int = 0
    """Save a checkpoint every N updates (training runs in jitted chunks of about a second, cut
    so that none runs past a multiple of N); 0: only at the end (and when interrupted)."""
    keep_checkpoints: int = 3
    """Keep only the newest N checkpoints of the run (older ones are deleted); 0 keeps all."""
    tensorboard: bool = False
    """Write TensorBoard event files (one run per seed) into the run directory as training goes."""
    wandb: bool = False
    """Log every update to Weights & Biases (offline, into the run directory, unless W&B is
    configured on this machine)."""
    batched_as: int = 1
    """Train each seed as one of this many identical copies on its device, so that its arithmetic
    is that of a run computing this many seeds side by side (set when one seed of a multi-seed run
    is retrained exactly; 1: alone). Needs ``num_seeds`` 1."""
    imports: tuple[str, ...] = ()
    """Python modules to import first, e.g. one that registers your environments or networks
    (purejaxppo.envs.register); the current directory is searched too."""

    def __post_init__(self) -> None:
        check_imports(self.imports)
        object.__setattr__(self, "imports", tuple(self.imports))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("tensorboard", "wandb"):
                if not isinstance(value, bool):
                    raise SettingsError(f"{f.name}={value!r} is invalid: must be true or false")
            elif f.name != "imports" and (isinstance(value, bool) or not isinstance(value, int)):
                raise SettingsError(f"{f.name}={value!r} is invalid: must be an integer")
        if self.num_seeds < 1:
            raise SettingsError(f"num_seeds={self.num_seeds} is invalid: must be a positive integer")
        if self.batched_as < 1:
            raise SettingsError(f"batched_as={self.batched_as} is invalid: must be a positive "
                                "integer")
        if self.batched_as > 1 and self.num_seeds != 1:
            raise SettingsError(f"batched_as={self.batched_as} with num_seeds={self.num_seeds} is "
                                "invalid: copies are for one seed; set num_seeds to 1")
        if self.keep_checkpoints < 0:
            raise SettingsError(f"keep_checkpoints={self.keep_checkpoints} is invalid: must be a "
                                "positive number of checkpoints, or 0 to keep every one")
        if self.checkpoint_every < 0:
            raise SettingsError(f"checkpoint_every={self.checkpoint_every} is invalid: must be a "
                                "positive number of updates, or 0 for a checkpoint at the end only")
        if self.seed < 0:
            raise SettingsError(f"seed={self.seed} is invalid: must be >= 0")
        if self.seed + self.num_seeds > MAX_SEED + 1:
            raise SettingsError(f"seed={self.seed} with num_seeds={self.num_seeds} is invalid: "
                                f"seeds must be at most {MAX_SEED} (2^32 - 1: jax.random.key "
                                "keeps 32 bits, so larger ones would repeat smaller ones)")


CONFIG_KEYS = tuple(f.name for f in dataclasses.fields(PPOConfig))
RUN_KEYS = tuple(f.name for f in dataclasses.fields(RunOptions))
SETTINGS_KEYS = (*CONFIG_KEYS, *RUN_KEYS, "preset")
"""Keys a settings file (and a run's config.json) may hold."""


class Preset(NamedTuple):
    """Published hyperparameters for one environment."""

    name: str
    env: str
    source: str
    config: dict[str, Any]


@functools.cache
def presets() -> dict[str, Preset]:
    """All presets of ``presets.json``, by name."""
    raw = json.loads(PRESETS_FILE.read_text())
    return {name: Preset(name, p["env"], p["source"], p["config"]) for name, p in raw.items()}


def _suggest(name: str, options: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def get_preset(name: str) -> Preset:
    """The preset called ``name``; a :class:`SettingsError` with close names if there is none."""
    table = presets()
    if not isinstance(name, str):
        raise SettingsError(f"preset={name!r} is invalid: must be a preset name such as "
                            f"{DEFAULT_ENV!r}")
    if name not in table:
        raise SettingsError(f"unknown preset {name!r}{_suggest(name, list(table))}; choose one "
                            f"of: {', '.join(table)}")
    return table[name]


def read_mapping_file(path: str | Path, what: str = "config file", flag: str = "--config"
                      ) -> dict[str, Any]:
    """Reads a JSON (``.json``) or YAML (``.yaml``/``.yml``) file holding a mapping.

    Raises:
        SettingsError: one line naming the file (``what``, given by ``flag``) and the fix.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SettingsError(f"{what} {str(path)!r} does not exist; check the path given "
                            f"to {flag}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"{what} {str(path)!r} (given to {flag}) is not UTF-8 text; give "
                            "a JSON or YAML file") from None
    except OSError as e:
        raise SettingsError(f"cannot read {what} {str(path)!r}: {e.strerror}; check the "
                            "path and its permissions") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        if importlib.util.find_spec("yaml") is None:
            raise SettingsError(f"reading {str(path)!r} needs PyYAML; pip install pyyaml, or "
                                "write the settings as JSON")
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            where = getattr(e, "problem_mark", None)
            line = f" at line {where.line + 1}" if where is not None else ""
            raise SettingsError(f"{what} {str(path)!r} is not valid YAML{line}; fix the "
                                "file or give a JSON one") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SettingsError(f"{what} {str(path)!r} is not valid JSON ({e.msg} at line "
                                f"{e.lineno}); fix the file (.yaml/.yml files are read as YAML)"
                                ) from None
    if data is None:
        raise SettingsError(f"{what} {str(path)!r} is empty; write a mapping of names to "
                            "values in it, such as 'lr: 0.0003'")
    if not isinstance(data, dict):
        raise SettingsError(f"{what} {str(path)!r} must hold a mapping of names to values, "
                            f"not a {type(data).__name__}")
    return data


def read_settings_file(path: str | Path) -> dict[str, Any]:
    """Reads a JSON (``.json``) or YAML (``.yaml``/``.yml``) settings file into a checked dict."""
    data = read_mapping_file(path)
    check_keys(data, f"config file {str(path)!r}")
    return data


def check_keys(settings: dict[str, Any], where: str) -> None:
    """Raises a :class:`SettingsError` naming the first unknown key (with close names)."""
    for key in settings:
        if key not in SETTINGS_KEYS:
            raise SettingsError(f"{where} has an unknown setting {key!r}"
                                f"{_suggest(str(key), SETTINGS_KEYS)}; the settings are "
                                f"{', '.join(SETTINGS_KEYS)}")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def numeric_strings(settings: dict[str, Any], cls: type) -> dict[str, Any]:
    """Numeric fields given as numeric strings (YAML 1.1 reads ``3e-4`` and ``1e5`` as strings)
    converted to numbers; anything else is left for the config's own validation."""
    import typing

    hints = typing.get_type_hints(cls)
    out = dict(settings)
    for key, value in settings.items():
        kind = hints.get(key)
        if kind not in (int, float) or not isinstance(value, str):
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        if kind is float:
            out[key] = number
        elif number.is_integer():
            out[key] = int(number)
    return out


def _config(settings: dict[str, Any]) -> PPOConfig:
    try:
        return PPOConfig(**numeric_strings(settings, PPOConfig))
    except ValueError as e:
        # PPOConfig names the field; point at the flag that sets it.
        message = str(e).splitlines()[0]
        m = re.match(r"PPOConfig\.(\w+)=", message)
        fix = f"; set {_flag(m.group(1))} (or {m.group(1)} in --config)" if m else ""
        raise SettingsError(message + fix) from None
    except TypeError as e:
        raise SettingsError(f"invalid settings: {e}") from None


def check_imports(names: Any) -> None:
    """A :class:`SettingsError` unless ``names`` is a list (or tuple) of module names."""
    if not isinstance(names, (list, tuple)) or not all(isinstance(m, str) and m for m in names):
        raise SettingsError(f"imports={names!r} is invalid: must be a list of module names, "
                            "such as [\"my_envs\"]")


def import_modules(names: tuple[str, ...] | list[str]) -> None:
    """Imports the modules of ``RunOptions.imports`` (the current directory is searched too).

    Raises:
        SettingsError: ``names`` is not a list of names, or a module cannot be imported (or
            exits while imported), with the reason.
    """
    import importlib
    import sys

    check_imports(names)
    if names and "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    for name in names:
        try:
            importlib.import_module(name)
        except SystemExit as e:  # sys.exit() while imported: nothing would run
            raise SettingsError(f"module {name!r} (given by --imports) called sys.exit({e.code!r}) "
                                "while imported; a module to import must only define and "
                                "register") from None
        except Exception as e:  # any failure of user code is reported as one line
            raise SettingsError(f"cannot import module {name!r} (given by --imports): "
                                f"{type(e).__name__}: {e}; check the name and that it is on the "
                                "Python path") from None


def split_settings(settings: dict[str, Any]) -> tuple[PPOConfig, RunOptions]:
    """A full settings dict (such as a run's config.json) as ``(PPOConfig, RunOptions)``.

    The modules of ``imports`` are imported first, so registered environments resolve.
    """
    check_keys(settings, "the settings")
    options = RunOptions(**numeric_strings({k: v for k, v in settings.items() if k in RUN_KEYS},
                                           RunOptions))
    import_modules(options.imports)
    config = _config({k: v for k, v in settings.items() if k in CONFIG_KEYS})
    return config, options


def settings_dict(config: PPOConfig, options: RunOptions, preset: str | None) -> dict[str, Any]:
    """The fully resolved settings, as written to a run's config.json (a valid --config file)."""
    run = dataclasses.asdict(options)
    run["imports"] = list(options.imports)
    return {**config.to_dict(), **run, "preset": preset}


class Resolved(NamedTuple):
    """The outcome of :func:`resolve`."""

    config: PPOConfig
    options: RunOptions
    preset: str | None
    """Name of the preset used, or None when the environment has none."""


def resolve(flags: dict[str, Any], file_settings: dict[str, Any] | None = None) -> Resolved:
    """Merges defaults < preset < settings file < explicit flags into a validated run.

    Args:
        flags: the settings given explicitly on the command line (keys of ``SETTINGS_KEYS``).
        file_settings: the contents of ``--config FILE``, if any.

    The environment is the first of: ``--env``, the file's ``env``, the preset's env, CartPole-v1;
    it is checked (:func:`purejaxppo.envs.make`) before anything else.
    The preset is ``--preset``, else the file's ``preset``, else the one named after the env (if
    any). A preset made for another environment is an error.
    """
    file_settings = dict(file_settings or {})
    import_modules(flags.get("imports", file_settings.get("imports", ())))
    preset_name = flags.get("preset", file_settings.get("preset"))
    preset = get_preset(preset_name) if preset_name is not None else None
    env = flags.get("env", file_settings.get("env", preset.env if preset else DEFAULT_ENV))
    if not isinstance(env, str):
        raise SettingsError(f"env={env!r} is invalid: must be an environment id such as "
                            f"{DEFAULT_ENV!r}")
    from purejaxppo import envs

    try:
        envs.make(env)  # an unknown env fails first, with close names
    except ValueError as e:
        raise SettingsError(str(e)) from None
    if preset is None and env in presets():
        preset = presets()[env]
    if preset is not None and preset.env != env:
        preset_from = "--preset" if "preset" in flags else "the config file's preset"
        env_from = "--env" if "env" in flags else "the config file's env"
        raise SettingsError(f"preset {preset.name!r} ({preset_from}) is for {preset.env}, not "
                            f"{env} ({env_from}); make them agree, e.g. env {preset.env} or a "
                            f"preset for {env}")
    merged: dict[str, Any] = dict(preset.config) if preset else {}
    for layer in (file_settings, flags):
        merged.update({k: v for k, v in layer.items() if k != "preset"})
    merged["env"] = env
    config, options = split_settings(merged)
    return Resolved(config, options, preset.name if preset else None)

