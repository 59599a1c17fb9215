"""Every third-party package the code imports is declared in pyproject.toml (dependencies or an
extra), so a fresh install of the package, not only this environment, has it."""
import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OURS = {"jaxpapers", "pallas_kernels"}


def _norm(name: str) -> str:
  return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
  project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
  reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values()
                                    for r in extra]
  return {_norm(re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]) for r in reqs}


def _imported() -> set[str]:
  mods = set()
  for f in [*(REPO / "jaxpapers").rglob("*.py"), *(REPO / "pallas_kernels").rglob("*.py")]:
    for node in ast.walk(ast.parse(f.read_text(), str(f))):
      if isinstance(node, ast.Import):
        mods |= {a.name.split(".")[0] for a in node.names}
      elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        mods.add(node.module.split(".")[0])
  return {m for m in mods if m not in sys.stdlib_module_names and m not in OURS}


def test_every_imported_package_is_declared():
  dists = importlib.metadata.packages_distributions()
  declared = _declared()
  missing = {}
  for module in sorted(_imported()):
    names = dists.get(module)
    assert names, f"{module} is imported but no installed distribution provides it"
    if not {_norm(n) for n in names} & declared:
      missing[module] = names
  assert not missing, f"imported but not declared in pyproject.toml: {missing}"
