"""The bad inputs of the fault suite (`faults.py`): malformed files of every format the project
reads, config files and overrides that fail, bad generation arguments. Each is
(experiment, fault class, what, `jaxpapers` arguments, the workdir that must stay unwritten)."""
from __future__ import annotations

import json
import lzma
import os
import pickle
from collections import defaultdict
from pathlib import Path


PWNED = "PWNED_BY_PICKLE"


class _Code:
  """Unpickling this runs os.system (it creates `path`): a file that must be refused before it
  runs."""

  def __init__(self, path):
    self.path = str(path)

  def __reduce__(self):
    return (os.system, (f"touch '{self.path}'",))


def bad_inputs(tmp: Path, corpus: Path, full: bool, targets, glm_workdir: Path | None = None):
  tmp = tmp / "inputs"
  tmp.mkdir(exist_ok=True)
  n = iter(range(10_000))

  def wd():
    return tmp / f"wd{next(n)}"

  def file(name, data):
    p = tmp / name
    p.parent.mkdir(parents=True, exist_ok=True)
    (p.write_bytes if isinstance(data, bytes) else p.write_text)(data)
    return p

  def run(exp, *extra):
    w = wd()
    return ["run", exp, "--preset", "tiny", "--workdir", w, *extra], w

  # config files and overrides
  for what, body in (("a syntax error", "def get_config(arg):\n  return {\n"),
                     ("get_config raises", "def get_config(arg):\n  raise KeyError(arg)\n"),
                     ("no get_config", "CONFIG = 1\n"),
                     ("get_config returns a list", "def get_config(arg):\n  return [1]\n"),
                     ("an import that fails", "import no_such_module_x\n")):
    f = file(f"cfg_{next(n)}.py", body)
    args, w = ["run", f"--config={f}:tiny", "--workdir", tmp / "cfgwd"], tmp / "cfgwd"
    yield "any", "config file that does not load", what, args, w
  for what, extra in (("unknown key", ["--config.train.no_such_key=1"]),
                      ("wrong type", ["--config.train.steps=many"]),
                      ("unknown preset", ["--preset", "huge"]),
                      ("unknown flag", ["--no_such_flag=1"])):
    args, w = run("glm/pretrain", f"--config.data.corpus={corpus}")
    if extra[0] == "--preset":
      args[args.index("--preset") + 1] = extra[1]
    else:
      args += extra
    yield "glm/pretrain", "bad command line", what, args, w
  args, w = run("no/such_experiment")
  yield "any", "bad command line", "unknown experiment", args, w
  f = file("a_file", "x")
  yield "glm/pretrain", "workdir not usable", "--workdir is a file", [
      "run", "glm/pretrain", "--preset", "tiny", "--workdir", f], None
  yield "glm/pretrain", "workdir not usable", "--workdir under a file", [
      "run", "glm/pretrain", "--preset", "tiny", "--workdir", f / "sub"], None

  # optimizer and guard settings, per experiment's train section
  values = (("lr", "inf"), ("lr", "-1.0"), ("b2", "5.0"), ("clip", "-1.0"), ("eps", "0.0"),
            ("max_consecutive_skips", "0"), ("inject_nan_into", "weights"))
  for t in [t for t in targets if t.lr][:None if full else 1]:
    data = [f"--config.data.corpus={corpus}"] if t.name in ("glm/pretrain", "gact/memory") else []
    section = t.train or t.lr.rsplit(".", 1)[0]
    for key, value in values:
      if key.startswith(("inject", "max_consecutive")) and t.train is None:
        continue         # no fault injector or skip cap in this experiment's own loop
      key = t.lr if key == "lr" else f"{section}.{key}"
      args, w = run(t.name, *data, f"--config.{key}={value}")
      yield t.name, "out-of-range optimizer setting", f"{key}={value}", args, w
  args, w = run("glm/pretrain", f"--config.data.corpus={corpus}", "--config.mesh.shape=(3, 1)")
  yield "glm/pretrain", "bad mesh shape", "(3, 1) on one device", args, w

  # text corpus (glm/pretrain, gact/memory)
  text = corpus.read_text()
  for what, path in (("missing file", tmp / "no_corpus.txt"),
                     ("empty file", file("empty.txt", "")),
                     ("binary bytes, not UTF-8", file("binary.txt", bytes(range(256)) * 64)),
                     ("a truncated .xz", file("cut.txt.xz", lzma.compress(text.encode())[:5000])),
                     ("too short for one sequence", file("short.txt", "It is a truth."))):
    for exp in ("glm/pretrain", "gact/memory") if full else ("glm/pretrain",):
      args, w = run(exp, f"--config.data.corpus={path}")
      yield exp, "corpus file", what, args, w

  # knowledge-graph TSV triples (kgt/queries)
  import random
  rnd = random.Random(0)
  triples = sorted({(f"e{rnd.randrange(30)}", f"r{rnd.randrange(4)}", f"e{rnd.randrange(30)}")
                    for _ in range(500)})
  rnd.shuffle(triples)
  split = {"train.tsv": triples[:-40], "valid.tsv": triples[-40:-20], "test.tsv": triples[-20:]}
  tsv = lambda rows: "".join("\t".join(r) + "\n" for r in rows)
  for what, files in (("missing folder", None),
                      ("two columns", {"train.tsv": "a\tr\nb\tr\n"}),
                      ("empty train.tsv", {"train.tsv": ""}),
                      ("bytes that are not UTF-8", {"valid.tsv": b"e1\tr1\t\xff\xfe\n"}),
                      ("no test.tsv", {"test.tsv": None})):
    d = tmp / f"kg{next(n)}"
    if files is not None:
      d.mkdir()
      for name_, rows in split.items():
        body = files.get(name_, tsv(rows))
        if body is not None:
          (d / name_).write_bytes(body if isinstance(body, bytes) else body.encode())
    args, w = run("kgt/queries", f"--config.datasets=('{d}',)")
    yield "kgt/queries", "KG triples (TSV)", what, args, w

  # BetaE query pickles (kgt/queries)
  from jaxpapers.kgt import kg, queries
  from jaxpapers.kgt.betae_format import write_betae
  data = queries.generate(kg.load("nations"), {"train": {"1p": 5}, "valid": {"1p": 2},
                                               "test": {"1p": 2}}, seed=0)

  def betae(name, edit):
    d = write_betae(data, tmp / name)
    edit(d)
    return d
  x = 0
  for _ in range(22):
    x = (x, x)
  bomb = pickle.dumps(defaultdict(set, {queries.STRUCTURES["1p"]: {x}}), protocol=4)
  cases = (("truncated pickle", lambda d: (d / "test-queries.pkl").write_bytes(
               (d / "test-queries.pkl").read_bytes()[:40])),
           ("2^22-fold shared tuples in 111 bytes", lambda d: (d / "train-queries.pkl").write_bytes(bomb)),
           ("a list where a dict belongs", lambda d: (d / "valid-queries.pkl").write_bytes(pickle.dumps([1, 2]))),
           ("code in the pickle", lambda d: (d / "train-queries.pkl").write_bytes(pickle.dumps({"q": _Code(tmp / PWNED)}))),
           ("missing answers file", lambda d: (d / "test-easy-answers.pkl").unlink()))
  for what, edit in cases:
    d = betae(f"betae{next(n)}", edit)
    args, w = run("kgt/queries", f"--config.datasets=('betae:{d}',)")
    yield "kgt/queries", "BetaE query pickles", what, args, w

  # Kinetics-GEBD annotation and prediction pickles (gebd/score)
  rec = dict(path_video="v.mp4", fps=30.0, video_duration=10.0, num_frames=300,
             substages_timestamps=[[2.0, 5.0], [2.1, 5.2]], substages_myframeidx=[[60, 150], [63, 156]],
             f1_consis=[0.8, 0.8], f1_consis_avg=0.8)
  gt = file("gt.pkl", pickle.dumps({"v1": rec}))
  preds = file("pred.pkl", pickle.dumps({"v1": [2.0, 5.1]}))
  for what, g, p in (("truncated annotations", file("gt_cut.pkl", gt.read_bytes()[:30]), preds),
                     ("a record without fps", file("gt_nofps.pkl", pickle.dumps(
                         {"v1": {k: v for k, v in rec.items() if k != "fps"}})), preds),
                     ("a timestamp past the video's end", file("gt_late.pkl", pickle.dumps(
                         {"v1": dict(rec, substages_timestamps=[[2.0, 50.0]])})), preds),
                     ("predictions not a dict", gt, file("pred_list.pkl", pickle.dumps([1.0]))),
                     ("predictions that are not numbers", gt, file("pred_str.pkl", pickle.dumps({"v1": ["x"]}))),
                     ("code in the predictions", gt, file("pred_code.pkl", pickle.dumps({"v1": _Code(tmp / PWNED)}))),
                     ("missing prediction file", gt, tmp / "no_pred.pkl")):
    w = wd()
    args = ["run", "gebd/score", "--workdir", w, f"--config.gt_file={g}", f"--config.pred_file={p}"]
    yield "gebd/score", "GEBD annotation pickles", what, args, w

  # BEIR folders (retrieval/transfer)
  corpus_rows = [{"_id": f"d{i}", "title": f"t{i}", "text": f"document number {i} text"} for i in range(40)]
  query_rows = [{"_id": f"q{i}", "text": f"query {i}"} for i in range(20)]

  def beir(corpus_text=None, queries_text=None, qrels=None, drop=None):
    d = tmp / f"beir{next(n)}"
    (d / "qrels").mkdir(parents=True)
    body = corpus_text or "".join(json.dumps(r) + "\n" for r in corpus_rows)
    (d / "corpus.jsonl").write_bytes(body if isinstance(body, bytes) else body.encode())
    (d / "queries.jsonl").write_text(queries_text or "".join(json.dumps(r) + "\n" for r in query_rows))
    (d / "qrels" / "test.tsv").write_text(qrels or "query-id\tcorpus-id\tscore\n" + "".join(
        f"q{i}\td{i}\t1\n" for i in range(20)))
    if drop:
      (d / drop).unlink()
    return d
  for what, d in (("a line that is not JSON", beir(corpus_text="{\"_id\": \"d0\", \"text\": \"x\"}\n{oops\n")),
                  ("a query without _id", beir(queries_text="{\"text\": \"q\"}\n")),
                  ("qrels naming an unknown document", beir(qrels="query-id\tcorpus-id\tscore\nq0\tnope\t1\n")),
                  ("no queries.jsonl", beir(drop="queries.jsonl")),
                  ("qrels score not a number", beir(qrels="query-id\tcorpus-id\tscore\nq0\td0\thigh\n")),
                  ("corpus.jsonl not UTF-8", beir(corpus_text=b'{"_id": "d0", "text": "\xff"}\n'))):
    args, w = run("retrieval/transfer", f"--config.data.beir=('{d}',)")
    yield "retrieval/transfer", "BEIR data set", what, args, w

  # knowledge-tracing CSV (mooc/pretrain)
  for what, fmt, body in (("DKT: a count that disagrees", "dkt", "3\n1,2\n1,0\n"),
                          ("DKT: correctness not 0/1", "dkt", "2\n1,2\n1,7\n"),
                          ("DKT: empty file", "dkt", ""),
                          ("ASSISTments: no correct column", "assistments", "user_id,skill_id,order_id\n1,2,3\n"),
                          ("ASSISTments: correct is NaN", "assistments",
                           "user_id,skill_id,correct,order_id\n1,2,nan,1\n1,3,1,2\n"),
                          ("DKT: bytes that are not UTF-8", "dkt", b"2\n1,\xff\n1,0\n")):
    f = file(f"kt{next(n)}.csv", body)
    args, w = run("mooc/pretrain", f"--config.kt_file={f}", f"--config.kt_format={fmt}")
    yield "mooc/pretrain", "knowledge-tracing CSV", what, args, w

  # network traces (iaad/sweep)
  for what, body in (("missing column", "time_s,latency_ms\n0,10\n1,20\n"),
                     ("negative latency", "time_s,latency_ms,lost\n0,10,0\n1,-5,0\n"),
                     ("NaN latency", "time_s,latency_ms,lost\n0,10,0\n1,nan,0\n"),
                     ("time going backwards", "time_s,latency_ms,lost\n0,10,0\n2,20,0\n1,20,0\n"),
                     ("header only", "time_s,latency_ms,lost\n"),
                     ("lost not 0/1", "time_s,latency_ms,lost\n0,10,0\n1,10,maybe\n"),
                     ("bytes that are not UTF-8", b"time_s,latency_ms,lost\n0,10,0\n1,\xff\xfe,0\n")):
    f = file(f"trace{next(n)}.csv", body)
    args, w = run("iaad/sweep", f"--config.network.trace={f}")
    yield "iaad/sweep", "network trace CSV", what, args, w

  # classification tasks as JSONL (pethead/suite)
  rows = [{"text": f"sentence {i}", "label": ["pos", "neg"][i % 2]} for i in range(80)]
  for what, body in (("a line that is not JSON", "".join(json.dumps(r) + "\n" for r in rows[:10]) + "{oops\n"),
                     ("a row without label", "".join(json.dumps(r) + "\n" for r in rows) + "{\"text\": \"x\"}\n"),
                     ("one class only", "".join(json.dumps(dict(r, label="pos")) + "\n" for r in rows)),
                     ("empty file", ""),
                     ("text not a string", "".join(json.dumps(dict(r, text=[1])) + "\n" for r in rows)),
                     ("bytes that are not UTF-8", b'{"text": "\xff", "label": "pos"}\n')):
    f = file(f"task{next(n)}.jsonl", body)
    args, w = run("pethead/suite", f"--config.tasks=('{f}',)")
    yield "pethead/suite", "task JSONL", what, args, w

  # generation on a glm/pretrain workdir
  if glm_workdir is not None:
    empty = tmp / "nockpt"
    empty.mkdir(exist_ok=True)
    (empty / "config.json").write_text((glm_workdir / "config.json").read_text())
    yield "glm/pretrain", "bad generation request", "no checkpoint", [
        "generate", "--workdir", empty, "--prompt", "x"], empty / "checkpoints"
    for what, flags in (("prompt longer than the context",
                         ["--prompt", " ".join(["It is a truth universally acknowledged"] * 20)]),
                        ("--temperature 0", ["--prompt", "x", "--temperature", "0"]),
                        ("--top_p 0", ["--prompt", "x", "--top_p", "0"]),
                        ("--max_new_tokens -3", ["--prompt", "x", "--max_new_tokens", "-3"]),
                        ("unknown --strategy", ["--prompt", "x", "--strategy", "beam"])):
      yield "glm/pretrain", "bad generation request", what, ["generate", "--workdir", glm_workdir,
                                                             *flags], None
