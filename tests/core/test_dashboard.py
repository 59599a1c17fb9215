"""`jaxpapers reproduce`'s dashboard: rendered from workdirs, verdicts coloured, and opened in a real
browser (Debian's chromium, driven by playwright) from a local HTTP server: tables present, no
broken image, no console error; screenshots saved."""
import functools
import http.server
import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxpapers import dashboard, registry
from jaxpapers.core.report import Report, Row, write_report

MACHINE = {"platform": "test", "processor": "x86_64", "cpu_cores": 2, "python": "3.11",
           "backend": "cpu", "devices": "1 x cpu", "versions": {"jax": "0.10"}}


def _fake_run(wd: Path, title: str, rows: list[Row]) -> None:
  wd.mkdir(parents=True)
  Image.fromarray(np.full((20, 30, 3), 120, np.uint8)).save(wd / "curve.png")
  frames = [Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)) for i in range(3)]
  frames[0].save(wd / "episode.gif", save_all=True, append_images=frames[1:], duration=100)
  (wd / "config.json").write_text(json.dumps({"seed": 0, "corpus": "<script>alert(1)</script>"}))
  report = Report(title=title, command=f"jaxpapers run x --workdir {wd}", rows=rows,
                  plots=[("curve.png", "a curve (with <eop>)")],
                  sections=[("Details", "| a | b |\n|---|---|\n| 1 | 2 |\n\nsome *text* <b>raw</b>\n\n"
                                        "![an episode](episode.gif) [the curve](curve.png)")])
  write_report(wd, report, {"metric": 1.0})


def _entry(paper, rc, wd, **kw):
  return {"paper": paper, "returncode": rc, "seconds": 60.0, "log": "l", "workdir": str(wd),
          "command": f"jaxpapers run {paper}", "preset": "quick", "machine": MACHINE} | kw


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
  root = tmp_path_factory.mktemp("reproduce")
  _fake_run(root / "runs" / "iaad_sweep", "IAAD sweep",
            [Row("miss ratio", "30% -> 7%", "96% -> 9%", "direction reproduced"),
             Row("adaptive near best", "-", "6 worse", "not reproduced", "held <eop> apart"),
             Row("speed", "-", "212 episodes/s", "n/a")])
  _fake_run(root / "runs" / "gebd_ladder", "GEBD ladder",
            [Row("soft labels", "+0.5", "+1.3", "reproduced")])
  log = root / "logs" / "kgt_queries.log"
  log.parent.mkdir()
  log.write_text("Traceback: boom\n")
  status = {"iaad/sweep": _entry("iaad", 0, root / "runs" / "iaad_sweep"),
            "gebd/ladder": _entry("gebd", 0, root / "runs" / "gebd_ladder"),
            "kgt/queries": _entry("kgt", 1, root / "runs" / "missing", log=str(log))}
  dashboard.write(root / "dashboard", status, ["iaad", "gebd", "kgt"])
  return root / "dashboard"


# every verdict string the reports use (jaxpapers/*/report.py, glm and gact experiments, core.stats)
REAL_VERDICTS = {
    "reproduced": "held", "direction reproduced": "partial", "not reproduced": "failed",
    "not met": "failed", "n/a": "info", "n/a (another metric)": "info",
    "not established": "info", "not established (CI reaches 0)": "info",
    "not measurable": "info", "no clear difference": "info",
    "helps (every seed's interval above 0)": "held",
    "helps on 2 of 3 seeds (the others' intervals hold 0)": "partial",
    "hurts (every seed's interval below 0)": "failed",
    "hurts on 1 of 3 seeds (the others' intervals hold 0)": "failed",
    "fd as the paper, but no model learned motion": "partial",
    "partly reproduced": "partial", "descriptive": "info",
    "n/a (our sanity check: held)": "info", "not met (our sanity check)": "failed",
    "n/a (toy scale: within our 0.5% bound)": "info",
    "not met (toy scale: beyond our 5% bound)": "failed",
    "direction reproduced (perplexity, not the paper's LAMBADA accuracy)": "partial",
    "n/a (the packing format's arithmetic: at most 14%)": "info",
    "not met (more than 14%)": "failed",
}


def test_verdict_classes():
  for verdict, cls in REAL_VERDICTS.items():
    assert dashboard.verdict_class(verdict) == cls, verdict


def test_pages_hold_every_paper_row_colour_and_escape(site):
  index = (site / "index.html").read_text()
  assert index.count("<tr>") == 1 + 3          # header + one row per paper
  for key in ("iaad", "gebd", "kgt"):
    assert f'href="{key}.html"' in index and (site / f"{key}.html").is_file()
  assert "0 of 1 experiments finished" in index       # kgt failed
  assert "x86_64, 2 cores" in index                   # the machine the runs ran on
  iaad = (site / "iaad.html").read_text()
  assert '<tr class="partial">' in iaad and '<tr class="failed">' in iaad
  assert '<tr class="info">' in iaad and "212 episodes/s" in iaad
  assert "<table>" in iaad and "<em>text</em>" in iaad          # the section's markdown
  # report text and file contents are escaped, never markup
  assert "held &lt;eop&gt; apart" in iaad and "(with &lt;eop&gt;)" in iaad
  assert "<script>" not in iaad and "&lt;script&gt;" in iaad
  assert "<b>raw</b>" not in iaad
  assert (site / "iaad_iaad_sweep" / "curve.png").is_file()
  assert (site / "iaad_iaad_sweep" / "episode.gif").is_file()
  kgt = (site / "kgt.html").read_text()
  assert "status-failed" in kgt and 'href="kgt_kgt_queries/kgt_queries.log"' in kgt
  assert (site / "kgt_kgt_queries" / "kgt_queries.log").read_text() == "Traceback: boom\n"
  assert '<tr class="held">' in (site / "gebd.html").read_text()


def test_registry_papers_name_known_experiments():
  for paper in registry.PAPERS.values():
    assert paper.experiments and all(e in registry.EXPERIMENTS for e in paper.experiments)


def _chromium() -> str | None:
  return shutil.which("chromium") or shutil.which("chromium-browser")


def test_dashboard_renders_in_a_real_browser(site, tmp_path):
  exe = _chromium()
  if exe is None:
    if os.environ.get("CI"):
      pytest.fail("chromium is missing: .ci/run installs Debian's chromium package")
    pytest.skip("no chromium on this machine (apt-get install chromium)")
  from playwright.sync_api import sync_playwright
  handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
  handler.log_message = lambda *a: None
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  base = f"http://127.0.0.1:{server.server_address[1]}"
  shots = Path(os.environ.get("JAXPAPERS_SCREENSHOTS", tmp_path))
  try:
    with sync_playwright() as pw:
      browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"])
      page = browser.new_page()
      problems = []
      page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
      page.on("pageerror", lambda e: problems.append(str(e)))
      page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
      page.on("response", lambda r: problems.append(f"{r.status}: {r.url}") if r.status >= 400
              else None)
      for name, rows in (("index.html", 4), ("iaad.html", None), ("kgt.html", None)):
        page.goto(f"{base}/{name}", wait_until="load")
        if rows:
          assert page.locator("#papers tr").count() == rows
        elif name == "iaad.html":
          assert page.locator("table.claims tr").count() == 1 + 3
          assert page.locator("img").count() == 3     # plot, media, and the report's inline GIF
        broken = page.evaluate(
            "[...document.images].filter(i => !i.complete || i.naturalWidth === 0).length")
        assert broken == 0, name
        page.screenshot(path=str(shots / f"dashboard_{name}.png"), full_page=True)
      page.click("text=all papers")
      assert page.url.endswith("/index.html")
      browser.close()
  finally:
    server.shutdown()
  assert problems == []
  assert (shots / "dashboard_index.html.png").stat().st_size > 1000
