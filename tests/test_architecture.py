"""The package's layering (pyproject.toml's import-linter contracts) holds,
and the contracts catch an import that runs back up."""

import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINT_IMPORTS = os.path.join(os.path.dirname(sys.executable), "lint-imports")


def _lint_imports(root: str):
  # grimp finds the package on the path: the one under `root`.
  env = dict(os.environ, PYTHONPATH=root)
  return subprocess.run([LINT_IMPORTS, "--no-cache", "--config",
                         os.path.join(root, "pyproject.toml")], cwd=root,
                        env=env, capture_output=True, text=True, timeout=300)


def test_import_contracts_are_kept():
  proc = _lint_imports(REPO)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
  assert "0 broken" in proc.stdout


def test_an_import_from_a_lower_layer_up_breaks_the_layers(tmp_path):
  shutil.copytree(os.path.join(REPO, "muesli_jax"), tmp_path / "muesli_jax",
                  ignore=shutil.ignore_patterns("__pycache__"))
  shutil.copy(os.path.join(REPO, "pyproject.toml"), tmp_path)
  learner = tmp_path / "muesli_jax" / "learner.py"
  learner.write_text(learner.read_text() +
                     "\nfrom muesli_jax import replay  # noqa\n")
  proc = _lint_imports(str(tmp_path))
  assert proc.returncode != 0
  assert "muesli_jax.learner -> muesli_jax.replay" in proc.stdout
