"""`jaxpapers run retrieval/transfer` end to end on a tiny random encoder, with a user's data set
in BEIR's layout (a document longer than the maximum length, a judgement of an unknown document)."""
import json
import subprocess
import sys

import pytest

from conftest import REPO


def _beir(folder, empty_query=False):
  (folder / "qrels").mkdir(parents=True)
  docs = [{"_id": f"d{i}", "title": f"page {i}", "text": f"the tool number {i} copies files"
           + (" and more" * 200 if i == 0 else "")} for i in range(12)]
  queries = [{"_id": f"q{i}", "text": "" if empty_query and i == 1 else f"which tool {i} copies"}
             for i in range(6)]
  (folder / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs))
  (folder / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries))
  (folder / "qrels" / "test.tsv").write_text(
      "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(6)) + "q0\tgone\t1\n")
  return folder


def _args(wd, *extra):
  return [sys.executable, "-m", "jaxpapers.cli", "run", "retrieval/transfer", "--preset", "tiny",
          "--workdir", str(wd), *extra]


@pytest.fixture(scope="module")
def transfer_run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("retrieval")
  beir = _beir(tmp / "toolbox")
  run = subprocess.run(_args(tmp / "wd", "--config.seeds=1", f"--config.data.beir=('{beir}',)"),
                       capture_output=True, text=True, cwd=REPO, timeout=300)
  return tmp, run


def test_transfer_writes_every_mode_and_setting(transfer_run):
  tmp, run = transfer_run
  assert run.returncode == 0, run.stderr[-3000:]
  r = json.loads((tmp / "wd" / "results.json").read_text())
  settings = {"in_domain", "cross_topic", "manpages", "pydocs", "beir:toolbox"}
  for key in ("ndcg10", "recall100", "mrr10", "ece"):
    assert set(r[key]) == {"bm25", "zeroshot", "ft", "pt", "bitfit"}, key
    for mode, per in r[key].items():
      extra = {"ood_avg", "avg"} if key == "ece" else {"ood_avg"}
      assert set(per) == settings | extra, (key, mode)          # no train or dev split reported
      assert all(0.0 <= per[s] <= 1.0 for s in settings), (key, mode)
  assert "avg" in r["ece"]["pt"] and "ood_avg" in r["ndcg10"]["pt"]
  assert 0 < r["pt_param_fraction"] < 0.01 and 0 < r["bitfit_param_fraction"] < 0.05
  assert set(r["lr_search"]["ft"]) == {"0.0001", "0.001"}          # ft's lr chosen on dev
  boot = r["paired"]["pt_minus_ft"]["ndcg10_query_bootstrap"]["ood_avg"]
  assert boot["ci95"][0] <= boot["mean"] <= boot["ci95"][1] and boot["queries"] == 16 + 16 + 16 + 6
  assert r["truncated"]["beir:toolbox"]["docs"] == [1]              # the one long document
  assert r["dropped"]["beir:toolbox"]["judgements_of_unknown_documents"] == 1
  assert "dropped 1 judgements of unknown documents" in run.stderr
  report = (tmp / "wd" / "REPORT.md").read_text()
  assert "PT - FT, in-domain nDCG@10" in report and "beir:toolbox" in report
  # the corpus index and the TREC run of each dense mode are saved with the run
  assert (tmp / "wd/runs/seed0/pt/index/in_domain.index.npz").is_file()
  assert (tmp / "wd/runs/seed0/pt/train/tuned.npz").is_file()
  assert (tmp / "wd/runs/seed0/bm25/runs/beir_toolbox.trec").read_text().count("\n") == 6 * 12


def test_an_empty_query_is_one_error_line_before_any_training(tmp_path):
  beir = _beir(tmp_path / "bad", empty_query=True)
  run = subprocess.run(_args(tmp_path / "wd", f"--config.data.beir=('{beir}',)"),
                       capture_output=True, text=True, cwd=REPO, timeout=120)
  assert run.returncode == 2
  assert "queries.jsonl:2: query 'q1' is empty" in run.stderr and "Traceback" not in run.stderr
  assert not (tmp_path / "wd" / "runs").exists()
