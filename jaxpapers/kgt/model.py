"""kgTransformer (§3.2): pre-LN Transformer layers whose attention is masked to the 1-hop
neighbourhood of the triple-transformed graph, with a top-2 Mixture-of-Experts feed-forward,
a final LayerNorm and an entity-prediction head. Attention runs over the graph's edge list with
`jraph.segment_softmax`, so a batch of small graphs costs O(edges), not O(nodes²)."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import jraph
from flax import nnx

from jaxpapers.core.mesh import constrain
from jaxpapers.kgt.graph import NUM_TYPES
from jaxpapers.nn.norm import layer_norm
from jaxpapers.nn.param import param, xavier_normal

GATES = ("softmax_topk", "raw_topk")


@dataclasses.dataclass(frozen=True)
class KGTConfig:
  num_entities: int
  num_relations: int
  d_model: int = 128
  num_heads: int = 4
  num_layers: int = 4
  d_ff: int = 256             # dense FFN width; each expert is d_ff / 2 wide (official code), so
  num_experts: int = 8        # top-2 routing activates as many hidden units as the dense FFN
  top_k: int = 2
  moe: bool = True            # False: one dense FFN (the "w/o MoE" ablation)
  gate: str = "softmax_topk"  # softmax over the top-k gate logits; "raw_topk": the raw logits
  dropout: float = 0.0

  @property
  def vocab_size(self) -> int:
    return self.num_entities + self.num_relations + 1


def top_k_gate(logits: jax.Array, k: int, gate: str) -> jax.Array:
  """[N, E] combine weights: nonzero only at each token's k largest gate logits. "softmax_topk"
  renormalises the k logits with a softmax (fastmoe's NaiveGate after its fix a6ca7f6, GShard);
  "raw_topk" weights by the raw logits, what the fastmoe commit pinned by the official code
  (b652e8d) computed. We default to the softmax: raw logits are unbounded and can be negative,
  so a token's output scale would follow the gate's, which the fix calls a bug."""
  vals, idx = jax.lax.top_k(logits, k)
  w = jax.nn.softmax(vals, axis=-1) if gate == "softmax_topk" else vals
  onehot = jax.nn.one_hot(idx, logits.shape[-1], dtype=logits.dtype)   # [N, k, E]
  return jnp.einsum("nk,nke->ne", w, onehot)


class MoE(nnx.Module):
  """Top-k MoE feed-forward: every expert is a ReLU MLP (fastmoe's FMoETransformerMLP as the
  official code configures it); a token's output is the gate-weighted sum
  of its k chosen experts. Experts are computed densely (the non-chosen ones get weight 0) and
  their parameters carry the logical axis "expert", so the mesh can shard them."""

  def __init__(self, d: int, d_ff: int, num_experts: int, k: int, gate: str, *, rngs: nnx.Rngs):
    self.k, self.gate_kind = k, gate
    init = xavier_normal(fan_in_axes=(1,), fan_out_axes=(2,))
    self.gate = param(rngs.params(), xavier_normal(), (d, num_experts), ("embed", None))
    # fastmoe's NaiveGate is a Linear layer with a bias (zeros here, PyTorch draws it uniformly)
    self.gate_bias = param(rngs.params(), nnx.initializers.zeros, (num_experts,), (None,))
    self.w1 = param(rngs.params(), init, (num_experts, d, d_ff), ("expert", "embed", "mlp"))
    self.b1 = param(rngs.params(), nnx.initializers.zeros, (num_experts, d_ff), ("expert", "mlp"))
    self.w2 = param(rngs.params(), init, (num_experts, d_ff, d), ("expert", "mlp", "embed"))
    self.b2 = param(rngs.params(), nnx.initializers.zeros, (num_experts, d), ("expert", "embed"))

  def combine_weights(self, x):
    return top_k_gate(x @ self.gate[...] + self.gate_bias[...], self.k, self.gate_kind)

  def __call__(self, x):
    combine = self.combine_weights(x)                                   # [N, E]
    e, d, f = self.w1.shape
    # all experts in one [d, E*f] matmul; the second matmul contracts over (expert, f) with the
    # hidden units scaled by their token's gate weight, so unchosen experts contribute 0
    w1 = jnp.transpose(self.w1[...], (1, 0, 2)).reshape(d, e * f)
    h = jax.nn.relu(x @ w1 + self.b1[...].reshape(e * f)).reshape(-1, e, f)
    h = constrain(h * combine[:, :, None], None, "expert", "mlp")
    return h.reshape(-1, e * f) @ self.w2[...].reshape(e * f, d) + combine @ self.b2[...]


class FFN(nnx.Module):
  def __init__(self, d: int, d_ff: int, *, rngs: nnx.Rngs):
    self.w1 = param(rngs.params(), xavier_normal(), (d, d_ff), ("embed", "mlp"))
    self.b1 = param(rngs.params(), nnx.initializers.zeros, (d_ff,), ("mlp",))
    self.w2 = param(rngs.params(), xavier_normal(), (d_ff, d), ("mlp", "embed"))
    self.b2 = param(rngs.params(), nnx.initializers.zeros, (d,), ("embed",))

  def __call__(self, x):
    return jax.nn.relu(x @ self.w1[...] + self.b1[...]) @ self.w2[...] + self.b2[...]


def _ln_params(rngs, d):
  return (param(rngs.params(), nnx.initializers.ones, (d,), ("embed",)),
          param(rngs.params(), nnx.initializers.zeros, (d,), ("embed",)))


class GraphAttention(nnx.Module):
  """Multi-head attention restricted to the edge list: node i attends the senders of its
  incoming edges (its 1-hop neighbourhood, self included)."""

  def __init__(self, d: int, heads: int, *, rngs: nnx.Rngs):
    self.heads = heads
    self.qkv = param(rngs.params(), xavier_normal(), (d, 3, d), ("embed", None, "heads"))
    self.out = param(rngs.params(), xavier_normal(), (d, d), ("heads", "embed"))

  def __call__(self, x, senders, receivers):
    n, d = x.shape
    q, k, v = jnp.unstack(jnp.einsum("nd,dce->cne", x, self.qkv[...]), axis=0)
    q, k, v = (a.reshape(n, self.heads, d // self.heads) for a in (q, k, v))
    logits = jnp.sum(q[receivers] * k[senders], -1) / jnp.sqrt(d // self.heads)   # [M, H]
    w = jraph.segment_softmax(logits, receivers, num_segments=n)
    out = jax.ops.segment_sum(w[..., None] * v[senders], receivers, num_segments=n)
    return out.reshape(n, d) @ self.out[...]


class Layer(nnx.Module):
  """Pre-LN: h + Attn(LN(h)), then h + MoE(LN(h))."""

  def __init__(self, c: KGTConfig, *, rngs: nnx.Rngs):
    self.ln1_scale, self.ln1_bias = _ln_params(rngs, c.d_model)
    self.ln2_scale, self.ln2_bias = _ln_params(rngs, c.d_model)
    self.attn = GraphAttention(c.d_model, c.num_heads, rngs=rngs)
    self.ffn = (MoE(c.d_model, c.d_ff // 2, c.num_experts, c.top_k, c.gate, rngs=rngs) if c.moe
                else FFN(c.d_model, c.d_ff, rngs=rngs))
    self.rate = c.dropout

  def _drop(self, x, key):
    if key is None or self.rate == 0.0:
      return x
    keep = jax.random.bernoulli(key, 1.0 - self.rate, x.shape)
    return jnp.where(keep, x / (1.0 - self.rate), 0.0)

  def __call__(self, h, senders, receivers, key=None):
    k1, k2 = jax.random.split(key) if key is not None else (None, None)
    h = h + self._drop(self.attn(layer_norm(h, self.ln1_scale[...], self.ln1_bias[...]), senders, receivers), k1)
    return h + self._drop(self.ffn(layer_norm(h, self.ln2_scale[...], self.ln2_bias[...])), k2)


class KGTransformer(nnx.Module):
  """Node feature = token embedding + type embedding (§3.1); L layers; final LN; the head scores
  every entity from a node's final state (a dense layer to the entity vocabulary)."""

  def __init__(self, c: KGTConfig, *, rngs: nnx.Rngs):
    self.config = c
    emb = nnx.initializers.normal(0.02)
    self.tokens = param(rngs.params(), emb, (c.vocab_size, c.d_model), ("vocab", "embed"))
    self.types = param(rngs.params(), emb, (NUM_TYPES, c.d_model), (None, "embed"))
    self.layers = nnx.List([Layer(c, rngs=rngs) for _ in range(c.num_layers)])
    self.ln_scale, self.ln_bias = _ln_params(rngs, c.d_model)
    self.head = param(rngs.params(), xavier_normal(), (c.d_model, c.num_entities), ("embed", "vocab"))
    self.head_bias = param(rngs.params(), nnx.initializers.zeros, (c.num_entities,), ("vocab",))

  def encode(self, tokens, types, senders, receivers, dropout_key=None):
    """[N, d] final node states of a (batched, padded) graph; dropout only with a key."""
    h = self.tokens[...][tokens] + self.types[...][types]
    for i, layer in enumerate(self.layers):
      h = layer(h, senders, receivers, None if dropout_key is None else jax.random.fold_in(dropout_key, i))
    return layer_norm(h, self.ln_scale[...], self.ln_bias[...])

  def entity_logits(self, h):
    return h @ self.head[...] + self.head_bias[...]

  def __call__(self, tokens, types, senders, receivers, nodes, dropout_key=None):
    """Entity logits [P, E] at node indices `nodes` [P]."""
    return self.entity_logits(self.encode(tokens, types, senders, receivers, dropout_key)[nodes])


def answer_loss(logits, labels, weight, label_smoothing: float = 0.0):
  """kgTransformer's objective (§3.3, §4): for each answer a of a prediction, cross-entropy of a
  against the non-answers only (the other answers are removed from the softmax denominator),
  answers weighted 1/|answers|; predictions weighted by `weight` (0 for padding). With label
  smoothing ε the loss is (1 − ε)·that + ε·(the smoothing term), the term as the official
  `loss_label_smoothing_multi_ans` (metric.py) computes it: for each answer a, the mean over
  every entity e of −log(exp(s_e) / D_a) with the same denominator D_a (a and the non-answers),
  weighted as the answers are.
  logits, labels: [P, E] (labels multi-hot); weight: [P]. Returns the weighted mean."""
  labels = labels.astype(logits.dtype)
  neg = jnp.where(labels > 0, -jnp.inf, logits)
  lse_neg = jax.nn.logsumexp(neg, axis=-1, keepdims=True)               # [P, 1]
  log_denominator = jnp.logaddexp(logits, lse_neg)                      # log D_a, per answer a
  per_answer = log_denominator - logits                                 # -log p(a | a ∪ negatives)
  n_ans = jnp.maximum(labels.sum(-1), 1.0)
  per_pred = (per_answer * labels).sum(-1) / n_ans
  if label_smoothing:
    # mean_e -log(exp(s_e) / D_a) = log D_a - mean_e s_e, averaged over the answers a
    smooth = (log_denominator * labels).sum(-1) / n_ans - logits.mean(-1)
    per_pred = (1 - label_smoothing) * per_pred + label_smoothing * smooth
  return (per_pred * weight).sum() / jnp.maximum(weight.sum(), 1e-9)
