"""The packages depend one way: data, model and parallel at the bottom; trainer and evals above
them, neither importing the other; scripts/ and train.py on top. Imports inside functions count."""

import ast
import glob
import os

from conftest import REPO

# package -> the repository packages it must never import
FORBIDDEN = {
    "data": {"trainer", "evals", "scripts", "train"},
    "model": {"trainer", "evals", "scripts", "train"},
    "parallel": {"trainer", "evals", "scripts", "train"},
    "trainer": {"evals", "scripts", "train"},
    "evals": {"trainer", "scripts", "train"},
}


def _imported_packages(path: str) -> set[str]:
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found |= {alias.name.split(".")[0] for alias in node.names}
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      found.add(node.module.split(".")[0])
  return found


def test_packages_depend_one_way():
  violations = []
  for package, forbidden in FORBIDDEN.items():
    for path in sorted(glob.glob(os.path.join(REPO, package, "**", "*.py"), recursive=True)):
      for bad in sorted(_imported_packages(path) & forbidden):
        violations.append(f"{os.path.relpath(path, REPO)} imports {bad}")
  assert not violations, violations


def test_the_check_sees_imports_inside_functions(tmp_path):
  module = tmp_path / "m.py"
  module.write_text("def f():\n  from trainer import export\n  import evals.lm\n")
  assert _imported_packages(str(module)) >= {"trainer", "evals"}


def test_the_config_schema_sits_with_the_bottom_packages():
  """Every layer reads a run's typed config (configs/schema.py, typed_config.py), so they import only
  data, model and parallel."""
  for path in ("configs/schema.py", "configs/base.py", "typed_config.py"):
    assert not _imported_packages(os.path.join(REPO, path)) & {"trainer", "evals", "scripts", "train"}, path
