"""`jaxpapers run retrieval/transfer`: prompt tuning (P-tuning v2) of a dense retriever against
full fine-tuning, BitFit, the pretrained encoder as shipped and BM25, in domain, across topics and
across domains, with calibration (Tam et al. 2022, arXiv 2207.07087 §4-5).

Modes: `bm25` (lexical, bm25s); `zeroshot` (all-MiniLM-L6-v2 as shipped: one tower, mean
pooling, cosine); `ft` (every encoder weight trained), `pt` (deep prompts of length L at every
layer, the backbone frozen), `bitfit` (bias terms only), each trained with DPR's loss on WordNet
gloss -> synset pairs of six lexname topics with one BM25 hard negative per query, then evaluated
zero-shot on every test setting.

A seed replicates everything random: the sampled queries, corpora and splits, the prompt
initialisation, dropout and the batch order. Each trained mode's learning rate is chosen from its
grid by the in-domain dev nDCG@10 on a tuning seed (c.seed + 1000, never reported); the reported
model is the last step's (a fixed budget, the same for every mode).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
from flax import nnx

from jaxpapers.core import config as cfglib
from jaxpapers.core.errors import ConfigError
from jaxpapers.core.mesh import make_mesh
from jaxpapers.core.stats import mean_std
from jaxpapers.core.train import train, validate_train
from jaxpapers.core.workdir import (atomic_path, atomic_write_json, cached_result,
                                    persistent_compilation_cache)
from jaxpapers.nn import minilm, pet
from jaxpapers.nn.bert import Bert, BertConfig
from jaxpapers.retrieval import data as datalib
from jaxpapers.retrieval import metrics
from jaxpapers.retrieval.bm25 import BM25, hard_negatives
from jaxpapers.retrieval.index import Encoder, save_index, search, write_trec_run
from jaxpapers.retrieval.model import POOLS, SCORES, TOWERS, DualEncoder, loss_fn

log = logging.getLogger("jaxpapers")

MODES = ("bm25", "zeroshot", "ft", "pt", "bitfit")
TRAINED = {"ft": "full", "pt": "prefix", "bitfit": "bitfit"}    # mode -> pet.trainable_filter
OUT_OF_DOMAIN = ("cross_topic", "manpages", "pydocs")
TUNING_SEED = 1000     # added to c.seed: the split and runs of the learning-rate search
ZEROSHOT = dict(pool="mean", score="cos")                        # all-MiniLM-L6-v2 as trained


def validate(c: ml_collections.ConfigDict) -> None:
  pos_int = lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0
  cfglib.check(c, "modes", lambda v: len(v) > 0 and all(m in MODES for m in v),
               f"a non-empty subset of {MODES}")
  cfglib.check(c, "seeds", pos_int, "a positive int")
  for key in ("data.n_train", "data.n_dev", "data.n_test", "data.n_corpus", "data.query_len",
              "eval.batch", "eval.k", "eval.ece_k", "eval.ece_bins", "train.batch",
              "train.epochs", "model.prefix_len"):
    cfglib.check(c, key, pos_int, "a positive int")
  for key in ("data.n_xdomain", "data.n_xdomain_corpus"):
    cfglib.check(c, key, lambda v: isinstance(v, int) and v >= 0, "an int >= 0 (0: all)")
  short = lambda v: pos_int(v) and v <= minilm.MAX_SEQ_LENGTH
  cfglib.check(c, "data.query_len", short, f"at most {minilm.MAX_SEQ_LENGTH}")
  cfglib.check(c, "data.doc_len", lambda v: all(short(n) for n in v.values()),
               f"token lengths (ints in [1, {minilm.MAX_SEQ_LENGTH}]) per collection")
  cfglib.check(c, "data.n_corpus", lambda v: v >= max(c.data.n_dev, c.data.n_test),
               "at least n_dev and n_test (each corpus holds its queries' documents)")
  cfglib.check(c, "data.beir", lambda v: isinstance(v, (tuple, list)),
               "a tuple of folders in BEIR's layout")
  for folder in c.data.beir:
    if not Path(folder).is_dir():
      raise ConfigError(f"--config.data.beir: {folder!r} is not a folder (BEIR's layout: "
                        "corpus.jsonl, queries.jsonl, qrels/test.tsv)")
    datalib.load_beir(folder)         # the files themselves, before anything is written
  cfglib.check(c, "model.encoder", lambda v: v in ("minilm", "tiny"), "'minilm' or 'tiny'")
  cfglib.check(c, "model.towers", lambda v: v in TOWERS, f"one of {TOWERS}")
  cfglib.check(c, "model.pool", lambda v: v in POOLS, f"one of {POOLS}")
  cfglib.check(c, "model.score", lambda v: v in SCORES, f"one of {SCORES}")
  cfglib.check(c, "model.scale", lambda v: isinstance(v, float) and v > 0, "a positive float")
  for key in ("model.dropout", "model.prefix_dropout"):
    cfglib.check(c, key, lambda v: 0.0 <= v < 1.0, "in [0, 1)")
  finite_pos = lambda v: isinstance(v, float) and math.isfinite(v) and v > 0
  for mode in TRAINED:
    cfglib.check(c, f"lr.{mode}", finite_pos, "a finite positive float")
    cfglib.check(c, f"lr_grid.{mode}", lambda v: all(finite_pos(x) for x in v),
                 "a tuple of positive floats (empty: use lr.<mode>)")
  cfglib.check(c, "eval.k", lambda v: v >= 100, ">= 100 (recall100 is reported)")
  cfglib.check(c, "eval.ece_k", lambda v: v <= c.eval.k, "at most eval.k")
  validate_train(_train_cfg(c, 1, 1, 1e-3))
  cfglib.check(c, "train.ckpt_every", lambda v: v == 0,
               "0 (the run resumes by finished mode and seed, not mid-training)")
  make_mesh(c.mesh.shape, c.mesh.axes)


def _train_cfg(c, steps: int, seed: int, lr: float):
  t = dict(c.train.to_dict(), steps=steps, lr=float(lr))
  t.pop("epochs")
  return ml_collections.ConfigDict({"seed": seed, "train": t})


def sizes(c) -> datalib.Sizes:
  d = c.data
  return datalib.Sizes(d.n_train, d.n_dev, d.n_test, d.n_corpus, d.n_xdomain, d.n_xdomain_corpus)


# ----------------------------------------------------------------------------- data


@dataclasses.dataclass
class Tokenized:
  """A collection with its queries and documents tokenized (fixed lengths)."""
  col: datalib.Collection
  queries: minilm.Encoded
  docs: minilm.Encoded
  hard: np.ndarray | None = None   # training pairs: each query's BM25 hard negative (a doc index)


def collections_of(seed: int, c, tokenizer, beir: dict) -> dict[str, Tokenized]:
  """The seed's collections, tokenized; the training pairs with their BM25 hard negatives (mined
  once here, shared by every mode of the seed)."""
  cols = datalib.builtin(seed, sizes(c)) | beir
  out = {}
  for name, col in cols.items():
    kind = name.split(":")[0] if name.startswith("beir:") else (
        "wordnet" if name in ("train", "dev", "in_domain", "cross_topic") else name)
    out[name] = Tokenized(col, tokenizer(col.queries, length=c.data.query_len),
                          tokenizer(col.docs, length=c.data.doc_len[kind]))
  tr = out["train"]
  tr.hard = hard_negatives(tr.col.queries, tr.col.docs, _positions(tr.col), seed=seed)
  return out


def _positions(col: datalib.Collection) -> np.ndarray:
  """The index in col.docs of each query's positive."""
  where = {d: i for i, d in enumerate(col.doc_ids)}
  return np.array([where[d] for d in col.positives()])


class Batches:
  """Step -> (queries, positives, BM25 hard negatives) of B training pairs: epoch-wise
  permutations, a function of (seed, step); an epoch's last incomplete batch is dropped."""

  def __init__(self, t: Tokenized, batch: int, seed: int):
    self.t, self.hard, self.batch, self.seed = t, t.hard, batch, seed
    self.per_epoch = max(len(t.col.queries) // batch, 1)
    self.pos = _positions(t.col)
    self._perm = {}

  def __call__(self, step: int) -> dict:
    epoch, i = divmod(step, self.per_epoch)
    if epoch not in self._perm:
      self._perm = {epoch: np.random.default_rng([self.seed, 11, epoch]).permutation(
          len(self.t.col.queries))}
    q = np.resize(self._perm[epoch][i * self.batch:(i + 1) * self.batch], self.batch)
    p, n = self.pos[q], self.hard[q]
    return {"q_ids": self.t.queries.ids[q], "q_mask": self.t.queries.mask[q],
            "p_ids": self.t.docs.ids[p], "p_mask": self.t.docs.mask[p],
            "n_ids": self.t.docs.ids[n], "n_mask": self.t.docs.mask[n]}


# ----------------------------------------------------------------------------- models


def backbone(c, seed: int, mode: str) -> Bert:
  """One tower: the pretrained encoder, with deep prompts for `pt` (initialised from `seed`)."""
  kw = dict(dropout=c.model.dropout)
  if mode == "pt":
    kw.update(prefix_len=c.model.prefix_len, prefix_dropout=c.model.prefix_dropout)
  rngs = nnx.Rngs(params=seed)
  if c.model.encoder == "minilm":
    return minilm.load(rngs=rngs, **kw)
  tiny = BertConfig(hidden=32, num_layers=2, num_heads=4, mlp_dim=64,
                    max_positions=minilm.MAX_SEQ_LENGTH, **kw)
  pretrained = Bert(dataclasses.replace(tiny, prefix_len=0), rngs=nnx.Rngs(params=1234))
  model = Bert(tiny, rngs=rngs)     # tests: one fixed random "pretrained" encoder, prompts fresh
  nnx.update(model, nnx.state(pretrained))
  return model


def retriever(c, seed: int, mode: str) -> DualEncoder:
  if mode == "zeroshot":
    return DualEncoder(backbone(c, seed, mode), None, scale=c.model.scale, **ZEROSHOT)
  query = backbone(c, seed * 7919 + 1, mode)
  doc = backbone(c, seed * 7919 + 2, mode) if c.model.towers == "separate" else None
  return DualEncoder(query, doc, pool=c.model.pool, score=c.model.score, scale=c.model.scale)


def _save_tuned(path: Path, model: nnx.Module, flt) -> None:
  """The tuned parameters of a parameter-efficient mode (the rest is the shipped encoder)."""
  flat = nnx.to_flat_state(nnx.state(model, flt))
  path.parent.mkdir(parents=True, exist_ok=True)
  with atomic_path(path) as tmp:
    np.savez(tmp, **{"/".join(map(str, p)): np.asarray(v.get_value()) for p, v in flat})


def fit(mode: str, c, cols: dict[str, Tokenized], seed: int, lr: float, wd: Path, mesh,
        progress: bool) -> tuple[DualEncoder, dict]:
  """Trains `mode` on the training pairs; returns the model and its training record."""
  tr = cols["train"]
  steps = c.train.epochs * max(len(tr.col.queries) // c.train.batch, 1)
  model = retriever(c, seed, mode)
  flt = pet.trainable_filter(TRAINED[mode])
  tuned, total = pet.count(model, flt), pet.count(model, nnx.Param)
  log.info("%s: training %d of %d parameters (%.3f%%), %d steps, lr %g", mode, tuned, total,
           100 * tuned / total, steps, lr)
  out = train(cfg=_train_cfg(c, steps, seed, lr), workdir=wd, model=model, loss_fn=loss_fn,
              get_batch=Batches(tr, c.train.batch, seed), mesh=mesh, progress=progress,
              trainable=flt)
  model = out.model()
  if mode != "ft":
    _save_tuned(wd / "tuned.npz", model, flt)
  tail = [h["loss"] for h in out.history[-max(1, steps // 10):]]
  return model, {"lr": lr, "steps": steps, "trained_params": tuned, "total_params": total,
                 "param_fraction": tuned / total, "final_loss": float(np.mean(tail))}


def evaluate(rank_fn, t: Tokenized, c, wd: Path | None, tag: str) -> dict:
  """Metrics of one ranking function (-> scores [Q, k], indices [Q, k]) on a collection: the
  trec_eval metrics, ECE over the top `ece_k` (the paper's protocol) and the truncation counts;
  the ranking is written in TREC format to `wd`."""
  scores, idx = rank_fn(t)
  col = t.col
  ranked = [[col.doc_ids[j] for j in row] for row in idx]
  # per-query values in query_ids' order (the pairing of two modes' queries)
  per = metrics.per_query(dict(zip(col.query_ids, ranked)), {q: col.qrels[q] for q in col.query_ids})
  out = {k: float(np.mean(v)) for k, v in per.items()}
  out["per_query_ndcg10"] = per["ndcg10"]
  out["ece"] = metrics.retrieval_ece(scores, ranked, col.query_ids, col.qrels, c.eval.ece_k,
                                     c.eval.ece_bins)
  out.update(truncated_docs=int(t.docs.truncated), truncated_queries=int(t.queries.truncated),
             n_queries=len(col.queries), n_docs=len(col.docs), **col.dropped)
  if wd is not None:
    wd.mkdir(parents=True, exist_ok=True)
    write_trec_run(wd / f"{_stem(col.name)}.trec", col.query_ids, col.doc_ids, scores, idx, tag)
  return out


def _stem(name: str) -> str:
  """A collection's name as a file name (`beir:scifact` -> `beir_scifact`)."""
  return name.replace(":", "_")


def dense_ranker(model: DualEncoder, encoder: Encoder, k: int, index_dir: Path | None):
  def rank(t: Tokenized):
    q = encoder(model, "query", t.queries, f"{t.col.name} queries")
    d = encoder(model, "doc", t.docs, f"{t.col.name} corpus")
    if index_dir is not None:
      save_index(index_dir / f"{_stem(t.col.name)}.index.npz", t.col.doc_ids, d)
    return search(q, d, model.scale, k)
  return rank


def bm25_ranker(k: int):
  return lambda t: BM25(t.col.docs).search(t.col.queries, k)


def eval_settings(cols: dict[str, Tokenized]) -> list[str]:
  return [n for n in cols if n not in ("train", "dev")]


def run_mode(mode: str, c, cols, seed: int, lr: float | None, wd: Path, mesh, encoder,
             progress: bool) -> dict:
  """One mode on one seed: trained (if it trains) and evaluated on every test setting."""
  t0 = time.perf_counter()
  record = {"mode": mode, "seed": seed}
  if mode == "bm25":
    rank = bm25_ranker(c.eval.k)
  else:
    if mode in TRAINED:
      model, record["train"] = fit(mode, c, cols, seed, lr, wd / "train", mesh, progress)
    else:
      model = retriever(c, seed, mode)
    rank = dense_ranker(model, encoder, c.eval.k, wd / "index")
  record["settings"] = {s: evaluate(rank, cols[s], c, wd / "runs", f"{mode}-seed{seed}")
                        for s in eval_settings(cols)}
  record["seconds"] = time.perf_counter() - t0
  for s, r in record["settings"].items():
    log.info("seed %d %-8s %-12s nDCG@10 %.3f  R@100 %.3f  MRR@10 %.3f  ECE %.3f", seed, mode, s,
             r["ndcg10"], r["recall100"], r["mrr10"], r["ece"])
  return record


SUITE_ONLY = ("modes", "seeds", "progress")   # keys that do not change one mode's result


def fingerprint(c) -> dict:
  """What a cached result depends on: the config (but the keys that only select which results
  are made) and the version of the shipped collections."""
  return {k: v for k, v in c.to_dict().items() if k not in SUITE_ONLY} | {
      "data_sha256": datalib.asset_sha256()}


def choose_lr(mode: str, c, tokenizer, beir, wd: Path, mesh, encoder, progress) -> tuple[float, dict]:
  """`mode`'s learning rate: the grid value with the best in-domain dev nDCG@10 on the tuning
  seed (its own queries, corpora and initialisation; never reported)."""
  grid = tuple(c.lr_grid[mode])
  if len(grid) < 2:
    return float(grid[0] if grid else c.lr[mode]), {}
  seed = c.seed + TUNING_SEED
  cols = None
  dev = {}
  for lr in grid:
    path = wd / "lr_search" / f"{mode}_lr{lr:g}"

    def fresh():
      nonlocal cols
      cols = cols or collections_of(seed, c, tokenizer, {})
      model, rec = fit(mode, c, cols, seed, lr, path / "train", mesh, progress)
      rec["dev"] = evaluate(dense_ranker(model, encoder, c.eval.k, None), cols["dev"], c, None, "")
      return rec, None
    rec, _ = cached_result(path / "result.json", fresh, fingerprint(c))
    dev[f"{lr:g}"] = rec["dev"]["ndcg10"]
  best = float(max(grid, key=lambda lr: dev[f"{lr:g}"]))
  log.info("%s: lr %g (in-domain dev nDCG@10 on the tuning seed: %s)", mode, best, dev)
  return best, dev


# ----------------------------------------------------------------------------- summary


METRICS = ("ndcg10", "recall100", "mrr10", "recall10", "top20", "ece")
BOOTSTRAP = 2000


def paired_bootstrap(a: list[dict], b: list[dict], settings: list[str], seed: int = 0) -> dict:
  """Mean per-query nDCG@10 difference a - b (records of the same seeds, so the same queries),
  averaged over `settings`, with a 95% percentile interval from resampling the queries of each
  seed and setting (2,000 resamples): the spread over queries, with the seeds pooled."""
  rng = np.random.default_rng(seed)
  diffs = [[np.subtract(ra["settings"][s]["per_query_ndcg10"], rb["settings"][s]["per_query_ndcg10"])
            for ra, rb in zip(a, b)] for s in settings]

  def stat(resample: bool) -> float:
    per_setting = []
    for per_seed in diffs:
      pooled = [d[rng.integers(len(d), size=len(d))] if resample else d for d in per_seed]
      per_setting.append(np.concatenate(pooled).mean())
    return float(np.mean(per_setting))

  boot = np.array([stat(True) for _ in range(BOOTSTRAP)])
  return {"mean": stat(False), "ci95": [float(np.percentile(boot, 2.5)),
                                        float(np.percentile(boot, 97.5))],
          "queries": int(sum(len(d) for per_seed in diffs for d in per_seed)), "seeds": len(a)}


def summarize(records: dict[str, list[dict]], c, lrs: dict, lr_search: dict) -> dict:
  """results.json: `ndcg10`, `recall100`, `mrr10`, `ece` [mode][setting] means over seeds (plus
  `ood_avg` over the out-of-domain settings, and `avg` for ECE); `detail` with sample std and
  per-seed values; `paired` differences PT - FT (and BitFit, zero-shot - FT) per setting: over
  seeds (t-interval) and over queries (bootstrap, seeds pooled); `pt_param_fraction`."""
  modes = [m for m in MODES if m in records]
  settings = list(records[modes[0]][0]["settings"])
  ood = [s for s in settings if s in OUT_OF_DOMAIN or s.startswith("beir:")]
  res = {key: {} for key in METRICS}
  res["detail"] = {}
  for m in modes:
    res["detail"][m] = {}
    for s in settings:
      res["detail"][m][s] = {key: mean_std([r["settings"][s][key] for r in records[m]])
                             for key in METRICS}
    for key in METRICS:
      res[key][m] = {s: res["detail"][m][s][key]["mean"] for s in settings}
      if ood:
        res[key][m]["ood_avg"] = float(np.mean([res[key][m][s] for s in ood]))
    res["ece"][m]["avg"] = float(np.mean([res["ece"][m][s] for s in settings]))
  res["paired"] = {}
  for m in ("pt", "bitfit", "zeroshot"):
    if m in modes and "ft" in modes:
      diffs = {s: [a["settings"][s]["ndcg10"] - b["settings"][s]["ndcg10"]
                   for a, b in zip(records[m], records["ft"])] for s in settings}
      if ood:
        diffs["ood_avg"] = list(np.mean([diffs[s] for s in ood], axis=0))
      diffs_ece = [np.mean([a["settings"][s]["ece"] - b["settings"][s]["ece"] for s in settings])
                   for a, b in zip(records[m], records["ft"])]
      boot = {s: paired_bootstrap(records[m], records["ft"], [s]) for s in settings}
      if ood:
        boot["ood_avg"] = paired_bootstrap(records[m], records["ft"], ood)
      res["paired"][f"{m}_minus_ft"] = {"ndcg10": {s: mean_std(d) for s, d in diffs.items()},
                                        "ndcg10_query_bootstrap": boot,
                                        "ece_avg": mean_std(diffs_ece)}
  for m in TRAINED:
    if m in modes:
      res[f"{m}_param_fraction"] = records[m][0]["train"]["param_fraction"]
      res.setdefault("trained_params", {})[m] = records[m][0]["train"]["trained_params"]
  res["settings"], res["out_of_domain"], res["modes"], res["seeds"] = settings, ood, modes, c.seeds
  res["lr"], res["lr_search"] = lrs, lr_search
  res["final_train_loss"] = {m: mean_std([r["train"]["final_loss"] for r in records[m]])
                             for m in TRAINED if m in modes}
  first = records[modes[0]]
  res["sizes"] = {s: {"queries": first[0]["settings"][s]["n_queries"],
                      "docs": first[0]["settings"][s]["n_docs"]} for s in settings}
  res["truncated"] = {s: {"docs": [r["settings"][s]["truncated_docs"] for r in first],
                          "queries": [r["settings"][s]["truncated_queries"] for r in first]}
                      for s in settings}
  res["dropped"] = {s: {k: v for k, v in first[0]["settings"][s].items()
                        if k.startswith(("judgements_", "queries_without", "empty_"))}
                    for s in settings if s.startswith("beir:")}
  res["seconds_per_mode"] = {m: float(np.mean([r["seconds"] for r in records[m]])) for m in modes}
  return res


def run(c: ml_collections.ConfigDict, workdir: str, command: str) -> dict:
  validate(c)
  from jaxpapers.retrieval.report import write  # noqa: PLC0415 (matplotlib only when reporting)
  wd = Path(workdir)
  progress = c.get("progress", True)
  t0 = time.perf_counter()
  mesh = make_mesh(c.mesh.shape, c.mesh.axes)
  persistent_compilation_cache(wd / "xla_cache")
  tokenizer = minilm.Tokenizer()
  encoder = Encoder(c.eval.batch, progress)
  beir = {}
  for folder in c.data.beir:            # every user file is checked before any training
    col = datalib.load_beir(folder)
    beir[col.name] = col
  lrs, lr_search = {}, {}
  for m in c.modes:
    if m in TRAINED:
      lrs[m], lr_search[m] = choose_lr(m, c, tokenizer, beir, wd / "runs", mesh, encoder, progress)
  records = {m: [] for m in c.modes}
  for k in range(c.seeds):
    seed = c.seed + k
    cols = None
    for m in c.modes:
      path = wd / "runs" / f"seed{seed}" / m

      def fresh():
        nonlocal cols
        cols = cols or collections_of(seed, c, tokenizer, beir)
        return run_mode(m, c, cols, seed, lrs.get(m), path, mesh, encoder, progress), None
      records[m].append(cached_result(path / "result.json", fresh, fingerprint(c))[0])
  results = summarize(records, c, lrs, lr_search)
  results["seconds"] = time.perf_counter() - t0
  results["command"] = command
  atomic_write_json(wd / "per_seed.json", records, indent=1)
  write(wd, c, results)
  return results
