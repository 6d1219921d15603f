"""The package: the library never imports the application, and its public API resolves."""

from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "purejaxppo"
APP_ONLY = ("tqdm", "matplotlib", "yaml")


def test_import_purejaxppo_loads_no_application_module_and_no_app_dependency():
    """In a fresh interpreter: what ``import purejaxppo`` adds to ``sys.modules`` on top of its
    own dependencies (jax, flax, optax, chex, numpy) holds no ``purejaxppo.app`` module and none
    of tqdm, matplotlib, yaml; ``purejaxppo.load`` then imports the application lazily."""
    script = """
import json, sys
import jax, flax.linen, optax, chex, numpy
before = set(sys.modules)
import purejaxppo
added = sorted(set(sys.modules) - before)
loaded_app = [m for m in sys.modules if m.startswith("purejaxppo.app")]
purejaxppo.load
print(json.dumps({"added": added, "app_before_load": loaded_app,
                  "app_after_load": sorted(m for m in sys.modules if m.startswith("purejaxppo.app"))}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["app_before_load"] == []
    top = {m.split(".")[0] for m in result["added"]}
    assert not top & set(APP_ONLY), sorted(top & set(APP_ONLY))
    assert "purejaxppo.app.evaluate" in result["app_after_load"]


def test_no_library_module_imports_the_application():
    """Static check of every library source file: no ``purejaxppo.app`` import, no app-only
    third-party package, at any depth (including imports inside functions)."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "app" in path.relative_to(PACKAGE).parts or path.name == "__main__.py":
            continue  # the application, and `python -m purejaxppo`, its entry point
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if name.startswith("purejaxppo.app") or name.split(".")[0] in APP_ONLY:
                    offenders.append(f"{path.relative_to(PACKAGE)}: {name}")
    # purejaxppo.load, the one lazy re-export, is named as a string in __init__'s table.
    assert offenders == [], offenders


def test_public_api_resolves():
    import purejaxppo

    for name in purejaxppo.__all__:
        assert getattr(purejaxppo, name) is not None, name
