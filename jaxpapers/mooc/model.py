"""The pre-training model (§3 of arXiv 2208.04708 as the issue states it): a bidirectional
Transformer over a student's behaviour sequence whose token embedding is the sum of

  text/concept embedding  W_text t_i + E_concept[k_i] + E_item[i]   (t_i: the subtitle's frozen
                          sentence embedding; k_i the concept the video or exercise is about)
  course meta embedding   E_course[c_i] + E_field[f_i] + E_school[s_i]
  behaviour embedding     E_response[r]   (a watch's completion quartile, or wrong / right)
  position embedding      E_pos[t]

and the masked-behaviour objective: BERT masking of whole tokens (an item and its response) plus
masking of exercise responses alone; a masked token predicts its item (softmax over every item,
tied to the items' input embeddings, BERT's output transform first) and its response.

The encoder is `jaxpapers.nn.bert.Bert` (post-LN, scanned layers); its token-type embedding is
the response embedding. The body of the paper was not available to us (only its abstract): the
composition above is the issue's, every choice beyond it is ours and named in
experiments/mooc/README.md.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxpapers.mooc.simulator import N_RESPONSES, RIGHT, WRONG
from jaxpapers.nn.bert import Bert, BertConfig
from jaxpapers.nn.norm import layer_norm
from jaxpapers.nn.param import param

MASK_RESPONSE = N_RESPONSES          # the response id of a masked token (type vocabulary + 1)


class Table(nnx.Param):
  """Static per-item data (ids and frozen text features): never trained (see TRAINABLE)."""


TRAINABLE = nnx.All(nnx.Param, nnx.Not(Table))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  hidden: int = 64
  layers: int = 2
  heads: int = 4
  mlp: int = 128
  max_len: int = 64
  dropout: float = 0.1
  text: bool = True         # the subtitle embedding term
  concept: bool = True      # the concept embedding term
  meta: bool = True         # the course meta-information terms


@dataclasses.dataclass
class Items:
  """Per-item side information; items are the videos (0..n_videos-1), then the exercises."""
  n_videos: int
  text: np.ndarray      # [I, D] frozen text features (zeros when there is no text)
  concept: np.ndarray   # [I]
  course: np.ndarray    # [I]
  field: np.ndarray     # [I]
  school: np.ndarray    # [I]
  n_concepts: int
  n_courses: int
  n_fields: int
  n_schools: int

  @property
  def n_items(self) -> int:
    return len(self.concept)

  @property
  def mask_id(self) -> int:
    return self.n_items

  @property
  def pad_id(self) -> int:
    return self.n_items + 1


class BehaviourModel(nnx.Module):

  def __init__(self, cfg: ModelConfig, items: Items, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.n_videos = items.n_videos
    E, total = cfg.hidden, items.n_items + 2          # + [MASK], [PAD]
    self.encoder = Bert(BertConfig(vocab_size=total, hidden=E, num_layers=cfg.layers,
                                   num_heads=cfg.heads, mlp_dim=cfg.mlp, max_positions=cfg.max_len,
                                   type_vocab=N_RESPONSES + 1, dropout=cfg.dropout, unroll=True),
                       rngs=rngs)
    pad = lambda a, v: np.concatenate([a, [v, v]]).astype(np.int32)   # specials: the 'none' row
    table = lambda a: Table(jnp.asarray(a), axes=(None,) * np.ndim(a))
    self.item_concept = table(pad(items.concept, items.n_concepts))
    self.item_course = table(pad(items.course, items.n_courses))
    self.item_field = table(pad(items.field, items.n_fields))
    self.item_school = table(pad(items.school, items.n_schools))
    self.item_text = table(np.concatenate([items.text, np.zeros((2, items.text.shape[1]))])
                           .astype(np.float32))
    normal = nnx.initializers.normal(0.02)
    emb = lambda n: param(rngs.params(), normal, (n + 1, E), (None, "embed"), decay=True)
    self.text_proj = param(rngs.params(), normal, (items.text.shape[1], E), (None, "embed"))
    self.concept_embed = emb(items.n_concepts)
    self.course_embed = emb(items.n_courses)
    self.field_embed = emb(items.n_fields)
    self.school_embed = emb(items.n_schools)
    zeros, ones = (lambda k, s, d: jnp.zeros(s, d)), (lambda k, s, d: jnp.ones(s, d))
    self.head_w = param(rngs.params(), normal, (E, E), ("embed", None))
    self.head_b = param(None, zeros, (E,), (None,), decay=False)
    self.head_ln_scale = param(None, ones, (E,), (None,), decay=False)
    self.head_ln_bias = param(None, zeros, (E,), (None,), decay=False)
    self.item_bias = param(None, zeros, (total,), (None,), decay=False)
    self.response_w = param(rngs.params(), normal, (E, N_RESPONSES), ("embed", None))
    self.response_b = param(None, zeros, (N_RESPONSES,), (None,), decay=False)

  def side(self) -> jnp.ndarray:
    """[I + 2, E]: every term of an item's embedding except its id embedding."""
    c = self.cfg
    out = jnp.zeros((self.item_concept.shape[0], c.hidden))
    if c.text:
      out = out + self.item_text.get_value() @ self.text_proj.get_value()
    if c.concept:
      out = out + self.concept_embed.get_value()[self.item_concept.get_value()]
    if c.meta:
      out = out + (self.course_embed.get_value()[self.item_course.get_value()]
                   + self.field_embed.get_value()[self.item_field.get_value()]
                   + self.school_embed.get_value()[self.item_school.get_value()])
    return out

  def __call__(self, items, responses, mask, *, causal: bool = False, dropout_key=None):
    """items, responses, mask [B, L] -> hidden states [B, L, E]."""
    extra = jnp.take(self.side(), items, axis=0)
    return self.encoder(items, mask, responses, extra=extra, causal=causal,
                        dropout_key=dropout_key)

  def item_logits(self, h):
    """[..., I + 2] scores of every item (tied to the input item embeddings)."""
    t = jax.nn.gelu(h @ self.head_w.get_value() + self.head_b.get_value(), approximate=False)
    t = layer_norm(t, self.head_ln_scale.get_value(), self.head_ln_bias.get_value(), 1e-12)
    table = self.encoder.tok_embed.get_value() + self.side()
    return t @ table.T + self.item_bias.get_value()

  def response_logits(self, h):
    return h @ self.response_w.get_value() + self.response_b.get_value()

  def correct_logit(self, h):
    """log-odds of a right answer: the response head's right minus wrong logit."""
    r = self.response_logits(h)
    return r[..., RIGHT] - r[..., WRONG]


def mask_tokens(items: np.ndarray, responses: np.ndarray, length: np.ndarray,
                rng: np.random.Generator, n_items: int, n_videos: int, mask_prob: float = 0.15,
                response_prob: float = 0.15) -> dict:
  """BERT's masking over real tokens: each is chosen with mask_prob (at least one per sequence,
  at most `max_predictions`);
  a chosen token becomes [MASK] (80%), a random item of the same kind (video or exercise; 10%)
  or keeps its item (10%), and its response is masked in every case (so the response target is
  never in the input); it predicts its item and its response. Of the exercise tokens not chosen, each has only its response masked with
  response_prob, and predicts it. `item_pos` [B, K] lists the chosen positions (item_target [B, K]
their items, -1 past the last); response_target [B, L] is -1 where nothing is predicted."""
  B, L = items.shape
  K = max_predictions(L, mask_prob)
  real = np.arange(L)[None] < length[:, None]
  chosen = real & (rng.random((B, L)) < mask_prob)
  none = ~chosen.any(1) & (length > 0)
  pick = (rng.random(B) * np.maximum(length, 1)).astype(int)
  chosen[np.nonzero(none)[0], pick[none]] = True
  chosen &= np.cumsum(chosen, 1) <= K           # at most K per sequence (as BERT's max_predictions)
  u = rng.random((B, L))
  to_mask, to_random = chosen & (u < 0.8), chosen & (u >= 0.8) & (u < 0.9)
  is_ex = items >= n_videos
  random_item = np.where(is_ex, n_videos + (rng.random((B, L)) * (n_items - n_videos)).astype(int),
                         (rng.random((B, L)) * n_videos).astype(int))
  resp_only = real & ~chosen & is_ex & (rng.random((B, L)) < response_prob)
  items_in = np.where(to_mask, n_items, np.where(to_random, random_item, items))
  resp_in = np.where(chosen | resp_only, MASK_RESPONSE, responses)
  order = np.argsort(~chosen, axis=1, kind="stable")[:, :K]       # chosen positions first
  n_chosen = chosen.sum(1, keepdims=True)
  return dict(items=np.where(real, items_in, n_items + 1).astype(np.int32),
              responses=np.where(real, resp_in, 0).astype(np.int32), mask=real.astype(np.int32),
              item_pos=order.astype(np.int32),
              item_target=np.where(np.arange(K)[None] < n_chosen,
                                   np.take_along_axis(items, order, 1), -1).astype(np.int32),
              response_target=np.where(chosen | resp_only, responses, -1).astype(np.int32))


def max_predictions(length: int, mask_prob: float) -> int:
  """Item predictions per sequence: twice the expected number of chosen tokens, plus 4 (more are
  left unchosen: at 0.15 x 64 tokens, P(> 23 chosen) < 1e-4)."""
  return min(length, int(2 * mask_prob * length) + 4)


def masked_ce(logits, target):
  """Mean cross-entropy over positions with target >= 0, and their count."""
  valid = target >= 0
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
  nll = -jnp.take_along_axis(logp, jnp.maximum(target, 0)[..., None], -1)[..., 0]
  n = valid.sum()
  return jnp.where(valid, nll, 0.0).sum() / jnp.maximum(n, 1), n


def pretrain_loss(model: BehaviourModel, batch: dict, key):
  """The masked-behaviour loss: item cross-entropy + response cross-entropy at masked tokens."""
  h = model(batch["items"], batch["responses"], batch["mask"], dropout_key=key)
  at = jnp.take_along_axis(h, batch["item_pos"][..., None], 1)      # [B, K, E]: chosen tokens
  item_loss, n_item = masked_ce(model.item_logits(at), batch["item_target"])
  resp_loss, n_resp = masked_ce(model.response_logits(h), batch["response_target"])
  return item_loss + resp_loss, dict(item_loss=item_loss, response_loss=resp_loss,
                                     masked=n_item.astype(jnp.float32))
