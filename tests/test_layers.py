"""The stages import only downwards (pyproject.toml's import-linter contracts), nothing below the
command line imports it, and each stage says what it owns and what it may import."""

import ast
import os
import pathlib
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _layers():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return next(c for c in config["contracts"] if c["type"] == "layers")["layers"]


def test_the_import_contracts_hold():
    lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    done = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert f"Contracts: {len(tomllib.loads((ROOT / 'pyproject.toml').read_text())['tool']['importlinter']['contracts'])}" \
           " kept, 0 broken." in done.stdout


def test_no_stage_imports_the_command_line():
    # cli/ installs as hpo.cli outside hpo/, where import-linter does not look.
    upward = []
    for path in sorted((ROOT / "hpo").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            upward += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names
                       if n == "hpo.cli" or n.startswith("hpo.cli.")]
    assert not upward, upward


def test_every_stage_says_what_it_owns_and_may_import():
    for layer in _layers():
        package = ROOT.joinpath(*layer.split("."), "__init__.py")
        doc = ast.get_docstring(ast.parse(package.read_text())) or ""
        assert "Imports" in doc or "import" in doc, (layer, doc)
