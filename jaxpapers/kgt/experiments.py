"""`jaxpapers run kgt/queries`: kgTransformer (two-stage masked pre-training, multi-task
fine-tuning) against GQE and Query2Box on the nine BetaE query types, per dataset, with the
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
from jaxpapers.core.errors import ConfigError
from jaxpapers.core.mesh import make_mesh
from jaxpapers.core.train import train
from jaxpapers.kgt import baselines as B
from jaxpapers.kgt import betae_format
from jaxpapers.kgt import evaluate as E
from jaxpapers.kgt import graph as G
from jaxpapers.kgt import kg as kglib
from jaxpapers.kgt import pipeline as P
from jaxpapers.kgt import queries as Q
from jaxpapers.kgt.model import GATES, KGTConfig, KGTransformer, answer_loss
from jaxpapers.kgt.predict import Predictor
from jaxpapers.kgt.sampling import TrainGraph

log = logging.getLogger("jaxpapers")

MODELS = ("kgtransformer", "gqe", "q2b")
ABLATIONS = ("no_pretrain", "no_moe")
_KEY = {"p1": "1p", "p2": "2p", "p3": "3p", "i2": "2i", "i3": "3i"}
GRAPH_AXES = {k: (None,) for k in ("tokens", "types", "senders", "receivers", "nodes", "weight")}
GRAPH_AXES["labels"] = (None, None)


def validate(c: ml_collections.ConfigDict) -> None:
  pos_int = lambda v: isinstance(v, int) and v > 0
  for key in ("model.d_model", "model.num_heads", "model.num_layers", "model.d_ff",
              "model.num_experts", "model.top_k", "queries.valid", "queries.test",
              "queries.max_answers", "eval.chunk", "baselines.dim", "baselines.negatives"):
    cfglib.check(c, key, pos_int, "a positive int")
  cfglib.check(c, "model.d_model", lambda v: v % c.model.num_heads == 0, "divisible by model.num_heads")
  cfglib.check(c, "model.top_k", lambda v: v <= c.model.num_experts, "at most model.num_experts")
  cfglib.check(c, "model.gate", lambda v: v in GATES, f"one of {GATES}")
  for stage in ("pretrain1", "pretrain2", "finetune", "baselines"):
    cfglib.check(c, f"{stage}.steps", lambda v: isinstance(v, int) and v >= 0, "a non-negative int")
    cfglib.check(c, f"{stage}.batch", pos_int, "a positive int")
    cfglib.check(c, f"{stage}.lr", lambda v: v > 0, "positive")
  for key in ("pretrain1.label_smoothing", "pretrain2.label_smoothing", "finetune.label_smoothing"):
    cfglib.check(c, key, lambda v: 0.0 <= v < 1.0, "in [0, 1)")
  cfglib.check(c, "models", lambda v: len(v) > 0 and all(m in MODELS for m in v), f"a subset of {MODELS}")
  cfglib.check(c, "ablations", lambda v: all(a in ABLATIONS for a in v), f"a subset of {ABLATIONS}")
  cfglib.check(c, "datasets", lambda v: isinstance(v, (tuple, list)) and len(v) > 0, "a non-empty tuple")
  cfglib.check(c, "pretrain1.ladies_share", lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
  cfglib.check(c, "pretrain1.mask_ratio", lambda v: len(v) == 2 and 0 < v[0] <= v[1] <= 1, "(lo, hi) in (0, 1]")
  cfglib.check(c, "pretrain2.ratios", lambda v: all(k in _KEY and w >= 0 for k, w in v.items())
               and sum(v.values()) > 0, "weights >= 0 of p1, p2, p3, i2, i3")


def load_queries(c: ml_collections.ConfigDict, name: str):
  """(QueryData, entity names, relation names, KG or None) for an embedded name, a TSV directory
  or `betae:DIR`."""
  if name.startswith("betae:"):
    data = betae_format.load_betae(name[len("betae:"):])
    ents = [str(i) for i in range(data.num_entities)]
    rels = [str(i) for i in range(data.num_relations)]
    return data, ents, rels, None
  kg = kglib.load(name)
  q = c.queries
  counts = {"train": {"1p": -1, **{_KEY[k]: v for k, v in q.train.items()}},
            "valid": {t: q.valid for t in Q.TYPES}, "test": {t: q.test for t in Q.TYPES}}
  data = Q.generate(kg, counts, seed=c.seed, max_answers=q.max_answers)
  return data, kg.entities, kg.relations, kg


def _stage_cfg(c, stage: str) -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.seed = c.seed
  s.train = c[stage]
  return s


def kgt_config(c, data: Q.QueryData, moe: bool = True) -> KGTConfig:
  return KGTConfig(data.num_entities, data.num_relations, moe=moe, **c.model.to_dict())


def _kgt_loss(smoothing: float):
  def loss_fn(model, batch, key):
    logits = model(batch["tokens"], batch["types"], batch["senders"], batch["receivers"], batch["nodes"], key)
    loss = answer_loss(logits, batch["labels"], batch["weight"], smoothing)
    return loss, {"predictions": batch["weight"].sum()}
  return loss_fn


def train_kgtransformer(c, data: Q.QueryData, kg, wd: Path, mesh, *, pretrain: bool, moe: bool):
  """Stage 1 (masked subgraphs), stage 2 (masked query shapes), fine-tuning; each stage resumes
  from its own checkpoints in wd/<stage>. Returns (model, {stage: history, seconds})."""
  vocab = G.Vocab(data.num_entities, data.num_relations)
  model = KGTransformer(kgt_config(c, data, moe), rngs=nnx.Rngs(params=c.seed))
  info = {}
  stages = []
  if pretrain:
    if kg is None:
      raise ConfigError("pre-training samples the knowledge graph; a betae: dataset has no triples "
                        "(set --config.ablations=('no_pretrain',) and --config.models without "
                        "kgtransformer, or give the KG as TSV)")
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
                batch_logical=GRAPH_AXES, progress=True)
    model = out.model()
    info[stage] = {"seconds": time.perf_counter() - t0, "history": [h["loss"] for h in out.history],
                   "step_time": float(np.median(out.step_times)) if out.step_times else float("nan")}
  return model, info


class BaselineBatches:
  """Training batches of GQE/Query2Box: per step, each in-domain type's share of the batch (in
  proportion to its training queries), one positive answer and `k` uniform negatives that are
  not answers (the BetaE training loop; any entity when every entity is an answer)."""

  def __init__(self, split: Q.QuerySplit, num_entities: int, batch: int, negatives: int, seed: int):
    self.split, self.E, self.k, self.seed = split, num_entities, negatives, seed
    sizes = {t: len(split.queries.get(t, [])) for t in Q.IN_DOMAIN if split.queries.get(t)}
    total = sum(sizes.values())
    self.per_type = {t: max(1, round(batch * n / total)) for t, n in sizes.items()}
    self.flat = {t: [Q.flatten(q) for q in split.queries[t]] for t in sizes}

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([self.seed, 5, step])
    out = {}
    for t, b in self.per_type.items():
      qs = self.split.queries[t]
      idx = rng.integers(len(qs), size=b)
      out[f"{t}/anchors"] = np.array([self.flat[t][i][0] for i in idx], np.int32)
      out[f"{t}/relations"] = np.array([self.flat[t][i][1] for i in idx], np.int32)
      pos, neg = [], []
      for i in idx:
        ans = self.split.answers[qs[i]]
        al = sorted(ans)
        pos.append(al[rng.integers(len(al))])
        pool = np.setdiff1d(np.arange(self.E), al) if len(al) < self.E else np.arange(self.E)
        cand = rng.choice(pool, size=self.k, replace=len(pool) < self.k)
        neg.append(cand)
      out[f"{t}/positive"] = np.array(pos, np.int32)
      out[f"{t}/negatives"] = np.array(neg, np.int32)
    return out


def train_baseline(c, kind: str, data: Q.QueryData, wd: Path, mesh):
  b = c.baselines
  cls = B.GQE if kind == "gqe" else B.Query2Box
  model = cls(data.num_entities, data.num_relations, b.dim, gamma=b.gamma, rngs=nnx.Rngs(params=c.seed))
  batches = BaselineBatches(data.splits["train"], data.num_entities, b.batch, b.negatives, c.seed)
  types = list(batches.per_type)

  def loss_fn(m, batch, key):
    losses = [B.negative_sampling_loss(m, t, batch[f"{t}/anchors"], batch[f"{t}/relations"],
                                       batch[f"{t}/positive"], batch[f"{t}/negatives"]) for t in types]
    return sum(losses) / len(losses), {}

  t0 = time.perf_counter()
  logical = {k: (None,) * (1 if k.endswith("positive") else 2) for k in batches(0)}
  out = train(cfg=_stage_cfg(c, "baselines"), workdir=wd / "train", model=model, loss_fn=loss_fn,
              get_batch=batches, mesh=mesh, batch_logical=logical, progress=True)
  info = {"train": {"seconds": time.perf_counter() - t0, "history": [h["loss"] for h in out.history],
                    "step_time": float(np.median(out.step_times)) if out.step_times else float("nan")}}
  return out.model(), info


def baseline_scorer(model):
  graphdef, state = nnx.split(model)
  fns = {}

  def score(qtype, queries):
    if qtype not in fns:
      fns[qtype] = jax.jit(lambda s, a, r: nnx.merge(graphdef, s).scores(qtype, a, r))
    flat = [Q.flatten(q) for q in queries]
    a = jnp.asarray(np.array([f[0] for f in flat], np.int32))
    r = jnp.asarray(np.array([f[1] for f in flat], np.int32))
    return np.asarray(fns[qtype](state, a, r))
  return score


def run(c: ml_collections.ConfigDict, workdir: str, command: str) -> dict:
  validate(c)
  from jaxpapers.kgt.report import write  # noqa: PLC0415 (matplotlib only when reporting)
  wd = Path(workdir)
  mesh = make_mesh(c.mesh.shape, c.mesh.axes)
  variants = [m for m in c.models] + [f"kgtransformer_{a}" for a in c.ablations]
  results: dict = {"config": {"datasets": list(c.datasets), "models": variants}}
  details: dict = {}
  for name in c.datasets:
    data, ents, rels, kg = load_queries(c, name)
    key = Path(name[len("betae:"):]).name if name.startswith("betae:") else Path(name).name
    log.info("%s: %d entities, %d relations; queries %s", key, data.num_entities, data.num_relations,
             {s: sum(v.counts().values()) for s, v in data.splits.items()})
    results[key], details[key] = {}, {"queries": {s: v.counts() for s, v in data.splits.items()}}
    for variant in variants:
      vwd = wd / key / variant
      if variant == "gqe" or variant == "q2b":
        model, info = train_baseline(c, variant, data, vwd, mesh)
        score = baseline_scorer(model)
      else:
        model, info = train_kgtransformer(c, data, kg, vwd, mesh,
                                          pretrain=variant != "kgtransformer_no_pretrain",
                                          moe=variant != "kgtransformer_no_moe")
        predictor = Predictor(model, chunk=c.eval.chunk)
        score = predictor.scores
        if variant == "kgtransformer":
          details[key]["explanations"] = _explain(predictor, data, ents, rels, c.eval.explain_examples)
      t0 = time.perf_counter()
      test = E.evaluate(score, data.splits["test"])
      valid = E.evaluate(score, data.splits["valid"])
      results[key][variant] = {t: test[t]["mrr"] for t in Q.TYPES if t in test}
      results[key][variant].update(avg_in=test["avg_in"]["mrr"], avg_out=test["avg_out"]["mrr"])
      details[key][variant] = {"test": test, "valid": valid, "train": info,
                               "eval_seconds": time.perf_counter() - t0}
      log.info("%s %s: test MRR avg_in %.3f avg_out %.3f", key, variant, test["avg_in"]["mrr"],
               test["avg_out"]["mrr"])
  results["details"] = details
  write(wd, command, c, results)
  return results


def _explain(predictor: Predictor, data: Q.QueryData, ents, rels, n: int) -> list[dict]:
  """Reasoning paths of the first test queries of 2p, 3p and pi (a hard answer beside them)."""
  out = []
  for t in ("2p", "3p", "pi"):
    for q in data.splits["test"].queries.get(t, [])[:n]:
      out.append(describe(predictor, q, ents, rels, hard=sorted(data.splits["test"].hard(q))))
  return out


def describe(predictor: Predictor, q, ents, rels, hard=()) -> dict:
  anchors, relations = Q.flatten(q)
  ex = predictor.explain(q)[0]
  return {"type": Q.type_of(q), "anchors": [ents[a] for a in anchors],
          "relations": [rels[r] for r in relations],
          "answers": [(ents[e], p) for e, p in ex.answers],
          "variables": [[(ents[e], p) for e, p in v] for v in ex.variables],
          "hard_answers": [ents[e] for e in hard]}
