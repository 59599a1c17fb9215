"""Pre-training samplers and masking (kgTransformer §4.1, as the official code samples)."""
import numpy as np

from jaxpapers.kgt import graph as G
from jaxpapers.kgt import kg as kglib
from jaxpapers.kgt import pipeline as P
from jaxpapers.kgt import sampling as S


def _train_graph():
  g = kglib.load("umls")
  return g, S.TrainGraph.of(g.triples["train"], g.num_entities)


def test_samplers_return_real_training_triples_within_budgets():
  g, tg = _train_graph()
  real = {tuple(t) for t in g.triples["train"].tolist()}
  rng = np.random.default_rng(0)
  for sampler, max_nodes in ((S.meta_tree, 16), (S.ladies, 10)):
    for _ in range(30):
      seed = tuple(int(x) for x in g.triples["train"][rng.integers(len(g.triples["train"]))])
      ents, triples = sampler(tg, seed, rng)
      assert ents[:2] == [seed[0], seed[2]] and triples[0] == (0, seed[1], 1)
      assert len(ents) == len(set(ents)) <= max_nodes
      assert len(triples) <= 50 and len(set(triples)) == len(triples)
      for i, r, j in triples:
        assert r % 2 == 0 and (ents[i], r, ents[j]) in real
      # connected: every entity is reached from the seed through the sampled triples
      seen, frontier = {0}, [0]
      while frontier:
        u = frontier.pop()
        for i, _, j in triples:
          for a, b in ((i, j), (j, i)):
            if a == u and b not in seen:
              seen.add(b)
              frontier.append(b)
      assert seen == set(range(len(ents))), sampler.__name__


def test_masking_ratio_and_80_10_10_per_subgraph():
  rng = np.random.default_rng(1)
  ents = list(range(100, 110))
  kinds = {"mask": 0, "random": 0, "kept": 0}
  for _ in range(3000):
    tokens, chosen = S.mask_entities(ents, rng, num_entities=200, mask_token=999)
    assert 2 <= len(chosen) <= 4                      # 20-40% of 10 entities
    assert all(tokens[i] == ents[i] for i in range(10) if i not in chosen)
    chosen_tokens = [tokens[i] for i in chosen]
    if all(t == 999 for t in chosen_tokens):
      kinds["mask"] += 1
    elif all(t == ents[i] for t, i in zip(chosen_tokens, chosen)):
      kinds["kept"] += 1
    else:
      assert 999 not in chosen_tokens                 # one rule for the whole subgraph
      kinds["random"] += 1
  # kept also catches random draws that hit the original entity (p = 1/200 each)
  assert abs(kinds["mask"] / 3000 - 0.8) < 0.03
  assert abs(kinds["random"] / 3000 - 0.1) < 0.02 and abs(kinds["kept"] / 3000 - 0.1) < 0.02


def test_batches_are_deterministic_and_static_in_shape():
  g, tg = _train_graph()
  v = G.Vocab(g.num_entities, g.num_relations)
  sb = P.SubgraphBatches(tg, v, batch=8, seed=0)
  a, b, c = sb(3), sb(3), sb(4)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
    assert a[k].shape == c[k].shape
  assert not np.array_equal(a["tokens"], c["tokens"])
  # predicted nodes are entity nodes labelled with the entity of the subgraph they replaced:
  # rebuild step 3's subgraphs with the same random stream and compare
  real = a["weight"] > 0
  assert np.all(a["types"][a["nodes"][real]] != G.RELATION)
  assert np.all(a["labels"][real].sum(1) == 1)
  rng = np.random.default_rng([0, 2, 3])
  expected, offset = [], 0
  for seed in sb.seeds(3):
    sampler = S.ladies if rng.random() < 0.5 else S.meta_tree
    ents, triples = sampler(tg, seed, rng)
    tokens, chosen = S.mask_entities(ents, rng, g.num_entities, v.mask)
    expected += [(offset + i, ents[i], tokens[i]) for i in chosen]
    offset += len(ents) + 2 * len(triples)
  assert len(expected) == int(real.sum())
  for (node, ent, token), n, lab in zip(expected, a["nodes"][real], a["labels"][real]):
    assert n == node and lab[ent] == 1 and a["tokens"][n] == token
