"""notebooks/quickstart.ipynb runs from top to bottom on the CPU (tiny presets), in a real Jupyter
kernel: the GLM and IAAD runs, their reports and plots shown inline."""
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"


@pytest.mark.slow
def test_quickstart_notebook_runs_on_the_cpu(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXPAPERS_NOTEBOOK_PRESET", "tiny")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  NotebookClient(nb, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": str(tmp_path)}}).execute()
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
  assert not [o for o in outputs if o.output_type == "error"]
  markdown = [o for o in outputs if "text/markdown" in o.get("data", {})]
  assert any("GLM pretraining" in o.data["text/markdown"] for o in markdown)
  assert any("IAAD" in o.data["text/markdown"] for o in markdown)
  assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2       # the runs' plots
  assert (tmp_path / "runs" / "glm" / "REPORT.md").is_file()
  assert (tmp_path / "runs" / "iaad" / "results.json").is_file()
