"""README.md's table of papers is generated from the measured runs in experiments/measured/: it
fails when a figure in the README and the snapshots disagree, and the generator carries every row
of every snapshot."""
import importlib.util
import json
from pathlib import Path

import pytest

from jaxpapers import registry

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def papers_table():
  spec = importlib.util.spec_from_file_location("papers_table", ROOT / "experiments" / "papers_table.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_readme_table_is_what_the_snapshots_generate(papers_table):
  readme = (ROOT / "README.md").read_text()
  assert papers_table.replace_table(readme, papers_table.table()) == readme, (
      "README.md's papers table and experiments/measured/ disagree: run "
      "`python experiments/papers_table.py write`")


def test_every_paper_has_a_row_and_every_snapshot_is_a_finished_run(papers_table):
  assert set(papers_table.BUILT) == set(registry.PAPERS)
  snaps = [json.loads(f.read_text()) for f in sorted(papers_table.MEASURED.glob("*.json"))]
  assert snaps, "no measured runs in experiments/measured/"
  for s in snaps:
    assert s["experiment"] in registry.EXPERIMENTS and s["paper"] in registry.PAPERS
    assert s["command"].startswith(f"jaxpapers run {s['experiment']}"), s["command"]
    assert s["rows"] and s["results"], s["experiment"]


def test_a_changed_figure_changes_the_table(papers_table, tmp_path):
  """The check can fail: the same snapshots with one measured figure edited give another table,
  and every row of every snapshot appears in it."""
  files = sorted(papers_table.MEASURED.glob("*.json"))
  for f in files:
    (tmp_path / f.name).write_text(f.read_text())
  original = papers_table.table(tmp_path)
  snap = json.loads(files[0].read_text())
  for r in snap["rows"]:
    assert papers_table._cell(r["measured"]) in original
  snap["rows"][0]["measured"] = "a figure nobody measured"
  (tmp_path / files[0].name).write_text(json.dumps(snap))
  changed = papers_table.table(tmp_path)
  assert changed != original and "a figure nobody measured" in changed
