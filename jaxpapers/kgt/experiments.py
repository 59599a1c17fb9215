"""`jaxpapers run kgt/queries`: kgTransformer (two-stage masked pre-training, multi-task
fine-tuning) against GQE, Query2Box and BetaE on the nine BetaE query types, per dataset, with the
ablations without pre-training and without MoE; filtered MRR/Hits on hard answers."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jaxpapers.core import config as cfglib
from jaxpapers.core.checkpoint import load_params_npz
from jaxpapers.core.errors import ConfigError, DataError, WorkdirError
from jaxpapers.core.mesh import make_mesh
from jaxpapers.core.stats import mean_std
from jaxpapers.core.train import train
from jaxpapers.core.workdir import persistent_compilation_cache, read_json
from jaxpapers.kgt import baselines as B
from jaxpapers.kgt import betae_format
from jaxpapers.kgt import evaluate as E
from jaxpapers.kgt import graph as G
from jaxpapers.kgt import kg as kglib
from jaxpapers.kgt import pipeline as P
from jaxpapers.kgt import queries as Q
from jaxpapers.kgt.model import GATES, KGTConfig, KGTransformer, answer_loss
from jaxpapers.kgt.predict import Predictor, on_one_device
from jaxpapers.kgt.sampling import TrainGraph
from jaxpapers.kgt.selection import METRICS, Selection, chosen_params

log = logging.getLogger("jaxpapers")

MODELS = ("kgtransformer", "gqe", "q2b", "betae")
BASELINES = ("gqe", "q2b", "betae")
ABLATIONS = ("nopretrain", "nomoe")
_KEY = {"p1": "1p", "p2": "2p", "p3": "3p", "i2": "2i", "i3": "3i"}
GRAPH_AXES = {k: (None,) for k in ("tokens", "types", "senders", "receivers", "nodes", "weight")}
GRAPH_AXES["labels"] = (None, None)


def validate(c: ml_collections.ConfigDict) -> None:
  pos_int = lambda v: isinstance(v, int) and v > 0
  for key in ("model.d_model", "model.num_heads", "model.num_layers", "model.d_ff",
              "model.num_experts", "model.top_k", "queries.valid", "queries.test",
              "queries.max_answers", "eval.chunk", "baselines.dim", "baselines.negatives",
              "baselines.betae_layers", "seeds"):
    cfglib.check(c, key, pos_int, "a positive int")
  cfglib.check(c, "seed", lambda v: isinstance(v, int) and v >= 0, "a non-negative int")
  cfglib.check(c, "eval.select_metric", lambda v: v in METRICS, f"one of {METRICS}")
  cfglib.check(c, "per_type.types", lambda v: all(t in PER_TYPE_TRAIN for t in v) and len(set(v)) == len(v),
               f"distinct types among {tuple(PER_TYPE_TRAIN)} (the official FB15k-237 runs; 1p, 2u and up "
               "keep the multi-task choice)")
  if c.per_type.types:
    cfglib.check(c, "per_type.steps", pos_int, "a positive int")
    cfglib.check(c, "per_type.lr", lambda v: v > 0, "positive")
    cfglib.check(c, "per_type.eval_every", lambda v: isinstance(v, int) and v >= 0, "a non-negative int")
  cfglib.check(c, "baselines.betae_hidden", lambda v: isinstance(v, int) and v >= 0,
               "a non-negative int (0: 4 x baselines.dim)")
  cfglib.check(c, "baselines.betae_gamma", lambda v: v > 0, "positive")
  cfglib.check(c, "baselines.betae_lr", lambda v: v >= 0, "non-negative (0: baselines.lr)")
  cfglib.check(c, "model.d_model", lambda v: v % c.model.num_heads == 0, "divisible by model.num_heads")
  cfglib.check(c, "model.top_k", lambda v: v <= c.model.num_experts, "at most model.num_experts")
  cfglib.check(c, "model.gate", lambda v: v in GATES, f"one of {GATES}")
  cfglib.check(c, "queries.generator", lambda v: v in Q.GENERATORS, f"one of {Q.GENERATORS}")
  for stage in ("pretrain1", "pretrain2", "finetune", "baselines"):
    cfglib.check(c, f"{stage}.steps", lambda v: isinstance(v, int) and v >= 0, "a non-negative int")
    cfglib.check(c, f"{stage}.batch", pos_int, "a positive int")
    cfglib.check(c, f"{stage}.lr", lambda v: v > 0, "positive")
    cfglib.check(c, f"{stage}.eval_every", lambda v: isinstance(v, int) and v >= 0,
                 "a non-negative int (0: validation at the last step only)")
    cfglib.check(c, f"{stage}.grad_accum", lambda v: v == 1,
                 "1 (graph batches hold node indices into the whole batch; they cannot be split)")
  for key in ("pretrain1.label_smoothing", "pretrain2.label_smoothing", "finetune.label_smoothing"):
    cfglib.check(c, key, lambda v: 0.0 <= v < 1.0, "in [0, 1)")
  cfglib.check(c, "model.dropout", lambda v: 0.0 <= v < 1.0, "in [0, 1)")
  cfglib.check(c, "queries.train", lambda v: all(k in _KEY and k != "p1" and isinstance(n, int) and n >= 0
                                                 for k, n in v.items()),
               "counts (ints >= 0) of p2, p3, i2, i3 (1p is every training edge)")
  if c.model.num_layers < 6:
    log.warning("model.num_layers=%d: attention is 1-hop and directed, so an anchor is 2 hops per "
                "relation from the target; with fewer than 6 layers 3p targets (and with fewer than "
                "4, 2p/ip/up) never see their anchor", c.model.num_layers)
  cfglib.check(c, "models", lambda v: len(v) > 0 and all(m in MODELS for m in v), f"a subset of {MODELS}")
  cfglib.check(c, "ablations", lambda v: all(a in ABLATIONS for a in v), f"a subset of {ABLATIONS}")
  cfglib.check(c, "datasets", lambda v: isinstance(v, (tuple, list)) and len(v) > 0, "a non-empty tuple")
  cfglib.check(c, "datasets", lambda v: all(isinstance(n, str) for n in v), "a tuple of strings")
  for name in c.datasets:
    path = name[len("betae:"):] if name.startswith("betae:") else name
    if name not in kglib.EMBEDDED and not Path(path).is_dir():
      raise ConfigError(f"--config.datasets: {name!r} is neither an embedded graph {kglib.EMBEDDED}, "
                        "a directory of train/valid/test.tsv, nor betae:DIR")
    if name.startswith("betae:"):       # the files themselves, before anything is written
      betae_format.load_betae(path)     # (cached: the run reads them once)
    elif name not in kglib.EMBEDDED:
      kglib.load_tsv_dir(path)
  cfglib.check(c, "pretrain1.ladies_share", lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
  cfglib.check(c, "pretrain1.mask_ratio", lambda v: len(v) == 2 and 0 < v[0] <= v[1] <= 0.4,
               "(lo, hi) with 0 < lo <= hi <= 0.4 (the batch budget holds 40% of 16 entities)")
  cfglib.check(c, "pretrain2.ratios", lambda v: all(k in _KEY and w >= 0 for k, w in v.items())
               and sum(v.values()) > 0, "weights >= 0 of p1, p2, p3, i2, i3")


def load_queries(c: ml_collections.ConfigDict, name: str):
  """(QueryData, entity names, relation names, KG or None) for an embedded name, a TSV directory
  or `betae:DIR`."""
  if name.startswith("betae:"):
    data = betae_format.load_betae(name[len("betae:"):])
    kg = betae_format.graph(data, name[len("betae:"):])
    return data, list(data.entities), list(data.relations), kg
  kg = kglib.load(name)
  q = c.queries
  counts = {"train": {"1p": -1, **{_KEY[k]: v for k, v in q.train.items()}},
            "valid": {t: q.valid for t in Q.TYPES}, "test": {t: q.test for t in Q.TYPES}}
  data = Q.generate(kg, counts, seed=c.seed, max_answers=q.max_answers, generator=q.generator)
  return data, kg.entities, kg.relations, kg


def _dataset_key(name: str) -> str:
  """The name a dataset goes by in results and workdirs: umls, or a directory's last part."""
  return Path(name[len("betae:"):] if name.startswith("betae:") else name).name


def _stage_info(out, t0: float) -> dict:
  return {"seconds": time.perf_counter() - t0, "history": [h["loss"] for h in out.history],
          "step_time": float(np.median(out.step_times)) if out.step_times else float("nan")}


def _stage_cfg(c, stage: str, **override) -> ml_collections.ConfigDict:
  """The train config of one stage: the section `stage` of c, with `override`'s keys replaced."""
  s = ml_collections.ConfigDict()
  s.seed = c.seed
  s.train = ml_collections.ConfigDict(dict(c[stage].to_dict(), **override)) if override else c[stage]
  return s


def kgt_config(c, data: Q.QueryData, moe: bool = True) -> KGTConfig:
  return KGTConfig(data.num_entities, data.num_relations, moe=moe, **c.model.to_dict())


def _kgt_loss(smoothing: float):
  def loss_fn(model, batch, key):
    logits = model(batch["tokens"], batch["types"], batch["senders"], batch["receivers"], batch["nodes"], key)
    loss = answer_loss(logits, batch["labels"], batch["weight"], smoothing)
    return loss, {"predictions": batch["weight"].sum()}
  return loss_fn


def selection_fingerprint(c) -> dict:
  """The config a sub-run's evaluation points depend on: all of it but the lists of datasets,
  seeds and models run, and the report's examples."""
  d = c.to_dict()
  d.pop("seeds", None), d.pop("datasets", None), d.pop("models", None), d.pop("ablations", None)
  d["eval"] = {k: v for k, v in d["eval"].items() if k != "explain_examples"}
  return d


def train_kgtransformer(c, data: Q.QueryData, kg, wd: Path, mesh, *, pretrain: bool, moe: bool):
  """Stage 1 (masked subgraphs), stage 2 (masked query shapes), fine-tuning; each stage resumes
  from its own checkpoints in wd/<stage>. Fine-tuning is evaluated on the validation queries
  every finetune.eval_every steps and at its end (`selection.Selection`, the official
  checkpoint choice). Returns (model, {stage: history, seconds}, selection)."""
  vocab = G.Vocab(data.num_entities, data.num_relations)
  model = KGTransformer(kgt_config(c, data, moe), rngs=nnx.Rngs(params=c.seed))
  predictor = Predictor(model, chunk=c.eval.chunk)
  selection = Selection(wd / "select", data.splits["valid"], predictor, metric=c.eval.select_metric,
                        fingerprint=selection_fingerprint(c))
  info = {}
  stages = []
  if pretrain and (c.pretrain1.steps or c.pretrain2.steps):
    if kg is None:
      raise ConfigError("pre-training samples the training graph; this betae: directory has no "
                        "train.txt and no train 1p queries to rebuild it from (set "
                        "--config.pretrain1.steps=0 --config.pretrain2.steps=0 to fine-tune only)")
    p1, p2 = c.pretrain1, c.pretrain2
    tg = TrainGraph.of(kg.triples["train"], kg.num_entities)
    stages += [("pretrain1", P.SubgraphBatches(tg, vocab, p1.batch, c.seed, p1.ladies_share, p1.mask_ratio)),
               ("pretrain2", P.ShapeBatches(kg.adjacency("train"), vocab, p2.batch, c.seed,
                                            {_KEY[k]: v for k, v in p2.ratios.items()}))]
  stages.append(("finetune", P.QueryBatches(data.splits["train"], Q.IN_DOMAIN, vocab, c.finetune.batch, c.seed)))
  for stage, batches in stages:
    if c[stage].steps == 0:
      continue
    t0 = time.perf_counter()
    out = train(cfg=_stage_cfg(c, stage), workdir=wd / stage, model=model,
                loss_fn=_kgt_loss(c[stage].label_smoothing), get_batch=batches, mesh=mesh,
                batch_logical=GRAPH_AXES, eval_fn=selection if stage == "finetune" else None,
                progress=True)
    model = out.model()
    info[stage] = _stage_info(out, t0)
  selection(model, c.finetune.steps)
  return model, info, selection


class BaselineBatches:
  """Training batches of GQE/Query2Box/BetaE: per step, each in-domain type's share of the batch (in
  proportion to its training queries), one positive answer and `k` negatives drawn uniformly
  without replacement among the non-answers (the BetaE training loop; answers fill in only when
  fewer than k entities are not answers; KGReasoning draws with replacement and its answer filter
  removes nothing), and each query's subsampling weight 1/√(4 + |answers|) (KGReasoning's
  TrainDataset). The types' losses are averaged with equal weight (KGReasoning alternates steps on
  a pooled batch of path queries and one of the other types)."""

  def __init__(self, split: Q.QuerySplit, num_entities: int, batch: int, negatives: int, seed: int):
    if negatives >= num_entities:
      raise ConfigError(f"--config.baselines.negatives={negatives} must be below the number of "
                        f"entities ({num_entities})")
    self.split, self.E, self.k, self.seed = split, num_entities, negatives, seed
    sizes = {t: len(split.queries.get(t, [])) for t in Q.IN_DOMAIN if split.queries.get(t)}
    if not sizes:
      raise DataError(f"no training queries of the in-domain types {Q.IN_DOMAIN}")
    total = sum(sizes.values())
    self.per_type = {t: max(1, round(batch * n / total)) for t, n in sizes.items()}
    self.anchors = {t: np.array([Q.flatten(q)[0] for q in split.queries[t]], np.int32) for t in sizes}
    self.relations = {t: np.array([Q.flatten(q)[1] for q in split.queries[t]], np.int32) for t in sizes}
    self.answers = {t: [np.array(sorted(split.answers[q]), np.int64) for q in split.queries[t]] for t in sizes}
    self.weights = {t: np.array([(4 + len(a)) ** -0.5 for a in self.answers[t]], np.float32) for t in sizes}

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([self.seed, 5, step])
    out = {}
    for t, b in self.per_type.items():
      idx = rng.integers(len(self.answers[t]), size=b)
      ans = [self.answers[t][i] for i in idx]
      pos = np.array([a[rng.integers(len(a))] for a in ans], np.int32)
      keys = rng.random((b, self.E))
      for j, a in enumerate(ans):
        keys[j, a] -= 1.0                       # answers sort after every non-answer
      neg = np.argpartition(-keys, self.k - 1, axis=1)[:, :self.k]
      out[f"{t}/anchors"] = self.anchors[t][idx]
      out[f"{t}/relations"] = self.relations[t][idx]
      out[f"{t}/positive"] = pos
      out[f"{t}/negatives"] = neg.astype(np.int32)
      out[f"{t}/weight"] = self.weights[t][idx]
    return out


def train_baseline(c, kind: str, data: Q.QueryData, wd: Path, mesh):
  """GQE, Query2Box or BetaE on the training queries, evaluated on the validation queries every
  baselines.eval_every steps and at the end, as kgTransformer's fine-tuning is (the same
  checkpoint choice per type). Returns (model, {"train": history, seconds}, selection)."""
  b = c.baselines
  rngs = nnx.Rngs(params=c.seed)
  if kind == "betae":   # BetaE's own margin and projection MLP (its published runs: γ 60, 2 x 4·dim)
    model = B.BetaE(data.num_entities, data.num_relations, b.dim, gamma=b.betae_gamma,
                    hidden=b.betae_hidden, layers=b.betae_layers, rngs=rngs)
  else:
    cls = B.GQE if kind == "gqe" else B.Query2Box
    model = cls(data.num_entities, data.num_relations, b.dim, gamma=b.gamma, rngs=rngs)
  batches = BaselineBatches(data.splits["train"], data.num_entities, b.batch, b.negatives, c.seed)
  types = list(batches.per_type)

  def loss_fn(m, batch, key):
    losses = [B.negative_sampling_loss(m, t, batch[f"{t}/anchors"], batch[f"{t}/relations"],
                                       batch[f"{t}/positive"], batch[f"{t}/negatives"],
                                       batch[f"{t}/weight"]) for t in types]
    return sum(losses) / len(losses), {}

  t0 = time.perf_counter()
  logical = {k: (None,) * (1 if k.endswith(("positive", "weight")) else 2) for k in batches(0)}
  cfg = _stage_cfg(c, "baselines", **({"lr": b.betae_lr} if kind == "betae" and b.betae_lr > 0 else {}))
  selection = Selection(wd / "select", data.splits["valid"], BaselineScorer(model, c.eval.chunk),
                        metric=c.eval.select_metric, fingerprint=selection_fingerprint(c))
  out = train(cfg=cfg, workdir=wd / "train", model=model, loss_fn=loss_fn,
              get_batch=batches, mesh=mesh, batch_logical=logical, eval_fn=selection, progress=True)
  info = {"train": _stage_info(out, t0)}
  model = out.model()
  selection(model, b.steps)
  return model, info, selection


class BaselineScorer:
  """Scores of GQE/Query2Box/BetaE: one compiled function per query type, reused for every set
  of parameters (`use`) and every number of queries (padded to `chunk`)."""

  def __init__(self, model, chunk: int = 256):
    self.graphdef, self.params = nnx.split(model)
    self.chunk, self.fns = chunk, {}

  def use(self, model) -> None:
    self.params = on_one_device(nnx.state(model))

  def scores(self, qtype, queries):
    if qtype not in self.fns:
      graphdef = self.graphdef
      self.fns[qtype] = jax.jit(lambda s, a, r: nnx.merge(graphdef, s).scores(qtype, a, r))
    flat = [Q.flatten(q) for q in queries]
    out = []
    for i in range(0, len(flat), self.chunk):
      part = flat[i:i + self.chunk]
      part = part + [part[0]] * (self.chunk - len(part))
      a = jnp.asarray(np.array([f[0] for f in part], np.int32))
      r = jnp.asarray(np.array([f[1] for f in part], np.int32))
      out.append(np.asarray(self.fns[qtype](self.params, a, r)))
    return np.concatenate(out)[:len(flat)]


def variant_names(c) -> list[str]:
  return list(c.models) + [f"kgtransformer_{a}" for a in c.ablations]


# the official single-task fine-tuning for FB15k-237 (THUDM/kgTransformer configs/fb15k-237.json,
# `reasoning_<type>`): the training query types each test type is fine-tuned on; 1p, 2u and up
# are tested with the multi-task checkpoints chosen for them (its NELL config differs: ip on
# 1p+2p, pi on 1p, and 2u/up fine-tuned on 1p/2p)
PER_TYPE_TRAIN = {"2p": ("1p", "2p"), "3p": ("1p", "2p", "3p"), "2i": ("2i",), "3i": ("3i",),
                  "ip": ("1p", "2p", "3p"), "pi": ("1p", "2p")}


def per_type_finetune(c, data: Q.QueryData, selection: Selection, model, wd: Path, mesh) -> tuple[dict, dict]:
  """Per-type fine-tuning (an option; the official code's `reasoning_<type>` runs): for each
  type t of per_type.types, from the multi-task parameters chosen for t, fine-tuning on the
  training queries of PER_TYPE_TRAIN[t] for per_type.steps steps at per_type.lr, evaluated on
  t's validation queries every per_type.eval_every steps and at the end; t is tested with its
  best point (only fine-tuned points are candidates, as the official `save_best`). Returns
  ({t: test metrics}, {t: selection summary, train info})."""
  vocab = G.Vocab(data.num_entities, data.num_relations)
  tests, info = {}, {}
  chosen = selection.chosen()
  for t in c.per_type.types:
    load_params_npz(selection.dir / f"step_{chosen[t]}.npz", model)
    sel_t = Selection(wd / f"select_{t}", data.splits["valid"], selection.scorer, types=(t,),
                      metric=c.eval.select_metric, fingerprint=selection_fingerprint(c))
    cfg = _stage_cfg(c, "finetune", steps=c.per_type.steps, lr=c.per_type.lr,
                     eval_every=c.per_type.eval_every)
    batches = P.QueryBatches(data.splits["train"], PER_TYPE_TRAIN[t], vocab, c.finetune.batch, c.seed)
    t0 = time.perf_counter()
    out = train(cfg=cfg, workdir=wd / f"finetune_{t}", model=model, loss_fn=_kgt_loss(c.finetune.label_smoothing),
                get_batch=batches, mesh=mesh, batch_logical=GRAPH_AXES, eval_fn=sel_t, progress=True)
    tuned = out.model()
    sel_t(tuned, c.per_type.steps)
    tests[t] = sel_t.test(tuned, data.splits["test"])[t]
    info[t] = {"selection": sel_t.summary(), "from_step": chosen[t], "train": _stage_info(out, t0)}
  return tests, info


def train_and_test(c, variant: str, data: Q.QueryData, kg, wd: Path, mesh):
  """One model of one seed: trained, its checkpoint chosen per type on validation, tested (with
  per_type.types, those types after their own fine-tuning). Returns (details dict, predictor or
  None)."""
  t0 = time.perf_counter()
  per_type = {}
  if variant in BASELINES:
    model, info, selection = train_baseline(c, variant, data, wd, mesh)
    predictor = None
  else:
    model, info, selection = train_kgtransformer(c, data, kg, wd, mesh,
                                                 pretrain=variant != "kgtransformer_nopretrain",
                                                 moe=variant != "kgtransformer_nomoe")
    predictor = selection.scorer
    if c.per_type.types:
      tests, per_type = per_type_finetune(c, data, selection, model, wd, mesh)
  t1 = time.perf_counter()
  test = selection.test(model, data.splits["test"])
  out = {"test": test, "valid": selection.valid_at_choice(), "selection": selection.summary(),
         "train": info, "seconds": t1 - t0, "eval_seconds": time.perf_counter() - t1}
  if per_type:      # the multi-task choice's test kept beside (the per-type ablation)
    out.update(test=E.with_averages({**test, **tests}), test_multitask=test, per_type=per_type)
  return out, predictor


METRIC_KEYS = tuple(Q.TYPES) + ("avg_in", "avg_out")


def summarise(per_seed: list[dict], variants: list[str]) -> tuple[dict, dict, dict]:
  """From {variant: details} per seed: the mean test MRR per type and average (the table), the
  spread over seeds (core.stats.mean_std: mean, sample std, 95% t-interval) and the paired
  differences kgTransformer minus each baseline and ablation, seed by seed (the seeds share
  queries)."""
  mrr = lambda d, k: d["test"][k]["mrr"]
  table, spread, paired = {}, {}, {}
  for v in variants:
    keys = [k for k in METRIC_KEYS if all(k in s[v]["test"] for s in per_seed)]
    spread[v] = {k: mean_std([mrr(s[v], k) for s in per_seed]) for k in keys}
    table[v] = {k: spread[v][k]["mean"] for k in keys}
  if "kgtransformer" in variants:
    for v in variants:
      if v != "kgtransformer":
        paired[f"kgtransformer - {v}"] = {
            a: mean_std([mrr(s["kgtransformer"], a) - mrr(s[v], a) for s in per_seed])
            for a in ("avg_in", "avg_out") if a in table[v] and a in table["kgtransformer"]}
  return table, spread, paired


def run(c: ml_collections.ConfigDict, workdir: str, command: str) -> dict:
  """Every dataset, seed and model; a seed draws the queries (embedded graphs; a betae:
  directory's queries are fixed), the training batches and every model's initialisation."""
  validate(c)
  from jaxpapers.kgt.report import write  # noqa: PLC0415 (matplotlib only when reporting)
  wd = Path(workdir)
  persistent_compilation_cache(wd / "xla_cache")     # every seed compiles the same steps
  mesh = make_mesh(c.mesh.shape, c.mesh.axes)
  variants = variant_names(c)
  results: dict = {"config": {"datasets": list(c.datasets), "models": variants,
                              "seeds": [c.seed + k for k in range(c.seeds)],
                              "select_metric": c.eval.select_metric}}
  details: dict = {}
  spreads: dict = {}
  paired: dict = {}
  for name in c.datasets:
    key = _dataset_key(name)
    details[key] = {}
    per_seed = []
    for k in range(c.seeds):
      cs = seed_config(c, c.seed + k)
      data, ents, rels, kg = load_queries(cs, name)
      log.info("%s seed %d: %d entities, %d relations; queries %s", key, cs.seed, data.num_entities,
               data.num_relations, {s: sum(v.counts().values()) for s, v in data.splits.items()})
      missing = [t for t in c.per_type.types if not data.splits["valid"].queries.get(t)]
      if missing:
        raise DataError(f"--config.per_type.types: {key} has no validation queries of {missing} to "
                        "choose their fine-tuning on")
      seed_details = {"queries": {s: v.counts() for s, v in data.splits.items()}}
      for variant in variants:
        with jax.set_mesh(mesh):     # scoring traced in and out of the train loop's mesh: 2 compiles
          d, predictor = train_and_test(cs, variant, data, kg, wd / key / f"seed{cs.seed}" / variant, mesh)
        seed_details[variant] = d
        if variant == "kgtransformer" and k == 0:      # each type with its chosen parameters
          vdir, metric = wd / key / f"seed{cs.seed}" / variant, c.eval.select_metric
          chosen = lambda t: predictor.use(chosen_model(vdir, predictor, t, metric))  # noqa: B023
          with jax.set_mesh(mesh):
            details[key]["explanations"] = _explain(predictor, chosen, data, ents, rels, c.eval.explain_examples)
            if kg is not None and len(kg.triples["test"]):     # G_test known (not from queries)
              chosen("2p")
              details[key]["path_validity_2p"] = path_validity(predictor, data.splits["test"], kg.adjacency("test"))
        log.info("%s seed %d %s: test MRR %s", key, cs.seed, variant,
                 ", ".join(f"{a} {d['test'][a]['mrr']:.3f}" for a in ("avg_in", "avg_out") if a in d["test"]))
      details[key][f"seed{cs.seed}"] = seed_details
      per_seed.append(seed_details)
    results[key], spreads[key], paired[key] = summarise(per_seed, variants)
  results["seeds"] = spreads
  results["paired"] = paired
  results["details"] = details
  write(wd, command, c, results)
  return results


def seed_config(c: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
  cs = ml_collections.ConfigDict(c.to_dict())
  cs.seed = seed
  return cs


def chosen_model(variant_dir: Path, predictor: Predictor, qtype: str, metric: str) -> KGTransformer:
  """The kgTransformer of a finished sub-run with the parameters its validation chose for
  `qtype`: the type's own fine-tuning (select_<type>/) where it had one, else the multi-task
  choice (select/)."""
  model = nnx.merge(predictor.graphdef, predictor.params)
  own = variant_dir / f"select_{qtype}"
  chosen_params(own if (own / "curve.json").is_file() else variant_dir / "select", model, qtype, metric)
  return model


def _explain(predictor: Predictor, use_type, data: Q.QueryData, ents, rels, n: int) -> list[dict]:
  """Reasoning paths of the first test queries of 2p, 3p and pi (a hard answer beside them);
  use_type(t) sets the predictor's parameters for type t."""
  out = []
  for t in ("2p", "3p", "pi"):
    use_type(t)
    for q in data.splits["test"].queries.get(t, [])[:n]:
      out.append(describe(predictor, q, ents, rels, hard=sorted(data.splits["test"].hard(q))))
  return out


def path_validity(predictor: Predictor, split: Q.QuerySplit, adj) -> dict[str, float]:
  """How often the reasoning path holds on the test graph, for 2p queries (a, r1, r2): the top
  predicted variable v satisfies (a, r1, v) and reaches an answer by r2; beside the rate of a
  uniformly random entity (the chance level)."""
  qs = split.queries.get("2p", [])
  if not qs:
    return {}
  layouts = [G.query_graph(q, predictor.vocab) for q in qs]
  top = [int(np.argmax(p[0])) for p in predictor.node_probs(layouts, lambda l: l.variables)]
  ok, chance = [], []
  for q, v in zip(qs, top):
    (a, (r1, r2)) = q
    good = {u for u in adj.get((a, r1), ()) if adj.get((u, r2), frozenset()) & split.answers[q]}
    ok.append(v in good)
    chance.append(len(good) / predictor.vocab.num_entities)
  return {"queries": len(qs), "valid_top1": float(np.mean(ok)), "chance": float(np.mean(chance))}


def describe(predictor: Predictor, q, ents, rels, hard=()) -> dict:
  anchors, relations = Q.flatten(q)
  ex = predictor.explain(q)[0]
  return {"type": Q.type_of(q), "anchors": [ents[a] for a in anchors],
          "relations": [rels[r] for r in relations],
          "answers": [(ents[e], p) for e, p in ex.answers],
          "variables": [[(ents[e], p) for e, p in v] for v in ex.variables],
          "hard_answers": [ents[e] for e in hard]}


def parse_query(qtype: str, anchors: list[str], relations: list[str], ents, rels) -> tuple:
  """A query from entity and relation names in `queries.flatten` order; one clear error for an
  unknown type, entity or relation, or the wrong number of either."""
  if qtype not in Q.TYPES:
    raise DataError(f"unknown query type {qtype!r}; the nine types are {', '.join(Q.TYPES)}")
  na, nr = Q.num_anchors(qtype), Q.num_relations(qtype)
  if len(anchors) != na or len(relations) != nr:
    raise DataError(f"a {qtype} query has {na} anchor(s) and {nr} relation(s), got {len(anchors)} "
                    f"and {len(relations)}")
  e_id = {e: i for i, e in enumerate(ents)}
  r_id = {r: i for i, r in enumerate(rels)}
  for a in anchors:
    if a not in e_id:
      raise DataError(f"unknown entity {a!r} in the query (the graph has {len(ents)} entities, "
                      f"e.g. {', '.join(ents[:3])})")
  for r in relations:
    if r not in r_id:
      raise DataError(f"unknown relation {r!r} in the query (e.g. {', '.join(rels[:4])}; the "
                      "embedded graphs' inverses end in -1, KGReasoning's start with '-')")
  return Q.unflatten(qtype, [e_id[a] for a in anchors], [r_id[r] for r in relations])


def _run_config(workdir) -> ml_collections.ConfigDict:
  wd = Path(workdir)
  if not (wd / "config.json").is_file():
    raise WorkdirError(f"{wd} holds no config.json of a kgt/queries run")
  c = ml_collections.ConfigDict(read_json(wd / "config.json"))
  if c.get("experiment") != "kgt/queries":
    raise ConfigError(f"{wd} is a {c.get('experiment')!r} run; explain needs kgt/queries")
  return c


def vocabulary(c, dataset: str) -> tuple[list[str], list[str]]:
  """Entity and relation names of a dataset of the run `c` (a betae: directory's own names, or
  its ids where it has none)."""
  names = {_dataset_key(n): n for n in c.datasets}
  if dataset not in names and dataset not in c.datasets:
    raise ConfigError(f"--dataset {dataset!r} is not in this run; it has {', '.join(names)} "
                      f"({', '.join(c.datasets)})")
  full = names.get(dataset, dataset)
  if full.startswith("betae:"):
    data = betae_format.load_betae(full[6:])
    return list(data.entities), list(data.relations)
  kg = kglib.load(full)
  return kg.entities, kg.relations


def load_trained(workdir, dataset: str, qtype: str, variant: str = "kgtransformer") -> Predictor:
  """A Predictor for the kgTransformer of a finished kgt/queries run (its first seed) with the
  parameters its validation chose for `qtype`."""
  c = _run_config(workdir)
  ents, rels = vocabulary(c, dataset)
  model = KGTransformer(KGTConfig(len(ents), len(rels), moe=variant != "kgtransformer_nomoe",
                                  **c.model.to_dict()), rngs=nnx.Rngs(params=c.seed))
  predictor = Predictor(model, chunk=8)
  vdir = Path(workdir) / _dataset_key(dataset) / f"seed{c.seed}" / variant
  predictor.use(chosen_model(vdir, predictor, qtype, c.eval.get("select_metric", "hits3")))
  return predictor


def explain_text(workdir, dataset: str, qtype: str, anchors: list[str], relations: list[str],
                 top: int = 3) -> str:
  """The reasoning path of one query, as `jaxpapers explain` prints it."""
  ents, rels = vocabulary(_run_config(workdir), dataset)
  q = parse_query(qtype, anchors, relations, ents, rels)
  predictor = load_trained(workdir, dataset, qtype)
  lines = []
  for ex in predictor.explain(q, top=top):
    a, r = Q.flatten(ex.query)
    lines.append(f"branch {ex.branch}: {Q.type_of(ex.query)} from {[ents[i] for i in a]} via {[rels[i] for i in r]}")
    for i, v in enumerate(ex.variables):
      lines.append(f"  variable {i + 1}: " + ", ".join(f"{ents[e]} ({p:.2f})" for e, p in v))
    lines.append("  answer: " + ", ".join(f"{ents[e]} ({p:.2f})" for e, p in ex.answers))
  return "\n".join(lines)
