"""The README's quickstart and CI stay in step."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_quickstart_has_exactly_two_setup_commands():
    commands = quickstart_commands()
    assert len(commands) == 2, commands
    assert all("\n" not in c for c in commands)
    main, tests = commands
    assert "pip install -e ." in main and main.endswith("purejaxppo train")
    assert 'pip install -e ".[test,envs]"' in tests and "pytest" in tests


def test_ci_runs_the_readme_test_command_in_a_fresh_venv():
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = quickstart_commands()[1]
    assert test_command in ci
    assert "rm -rf .venv" in ci and ci.index("rm -rf .venv") < ci.index(test_command)


def python_block_after(heading: str) -> str:
    """The first ```python block of the README section ``heading``."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)[0]


def test_custom_environment_example_runs_and_learns():
    """The README's custom-environment example, executed as written: the corridor is learned
    (episodes shrink to the 9 steps of walking straight right)."""
    from purejaxppo import envs

    code = python_block_after("Your own environment")
    assert len(code.splitlines()) <= 45
    namespace: dict = {}
    try:
        exec(compile(code, "README: Your own environment", "exec"), namespace)
        lengths = namespace["result"].metrics["episode_length"]
        assert float(lengths[-1]) <= 10.0, lengths[-5:]
        assert envs.make("Corridor-v0").time_limit == 50
    finally:
        envs.unregister("Corridor-v0")


def test_custom_network_example_runs():
    from purejaxppo import networks

    code = python_block_after("Your own network")
    namespace: dict = {}
    try:
        exec(compile(code, "README: Your own network", "exec"), namespace)
        result = namespace["result"]
        assert result.params["actor"]["params"]["Dense_1"]["kernel"].shape == (4, 32)
        assert "small" in networks.registered_networks()
        action = namespace["act"](result.params, [0.0, 0.0, 0.0, 0.0], deterministic=True)
        assert int(action) in (0, 1)
    finally:
        networks.unregister_network("small")
