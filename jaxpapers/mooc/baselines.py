"""Task baselines: popularity and next-in-course (recommendation), SASRec (Kang & McAuley 2018),
DKT (Piech et al. 2015; an LSTM over skill-answer pairs), SAKT (Pandey & Karypis 2019; one
self-attention block whose query is the next exercise and whose keys are past interactions),
logistic regression on activity features (dropout) and ridge regression (resource evaluation).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxpapers.mooc.model import masked_ce
from jaxpapers.mooc.simulator import Logs, RIGHT
from jaxpapers.nn.bert import Bert, BertConfig
from jaxpapers.nn.param import param


# ----------------------------------------------------------------------------- recommendation

def popularity_scores(train: Logs, n: int) -> np.ndarray:
  """[V] how often each video is watched in the training logs (one ranking for everyone)."""
  L = train.items.shape[1]
  real = (np.arange(L)[None] < train.length[:, None]) & (train.items >= 0) & (
      train.items < train.n_videos)
  return np.bincount(train.items[real], minlength=n).astype(np.float64)


def next_in_course_scores(items: np.ndarray, t: np.ndarray, video_next: np.ndarray,
                          popularity: np.ndarray) -> np.ndarray:
  """The course's next video after the last video watched before t first, then by popularity."""
  pos = np.arange(items.shape[1])[None]
  is_v = (pos < t[:, None]) & (items >= 0) & (items < len(video_next))
  last = np.take_along_axis(items, np.where(is_v, pos, -1).max(1, keepdims=True).clip(0), 1)[:, 0]
  nxt = video_next[last]
  scores = np.tile(popularity / (popularity.max() + 1.0), (len(t), 1))
  ok = nxt >= 0
  scores[np.nonzero(ok)[0], nxt[ok]] = 2.0
  return scores


class SASRec(nnx.Module):
  """A causal Transformer over item ids (videos and exercises) with learned positions; the score
  of a video is the dot product of the last hidden state with its (tied) item embedding."""

  def __init__(self, n_items: int, n_videos: int, hidden: int, layers: int, heads: int, mlp: int,
               max_len: int, dropout: float, *, rngs: nnx.Rngs):
    self.n_videos = n_videos
    self.encoder = Bert(BertConfig(vocab_size=n_items + 1, hidden=hidden, num_layers=layers,
                                   num_heads=heads, mlp_dim=mlp, max_positions=max_len,
                                   type_vocab=1, dropout=dropout, unroll=True), rngs=rngs)

  def __call__(self, items, mask, key=None):
    h = self.encoder(items, mask, causal=True, dropout_key=key)
    return h @ self.encoder.tok_embed.get_value()[:self.n_videos].T


def sasrec_batch(logs: Logs, students: np.ndarray) -> dict:
  L = logs.items.shape[1]
  items = logs.items[students]
  real = np.arange(L)[None] < logs.length[students][:, None]
  nxt = np.concatenate([items[:, 1:], -np.ones((len(students), 1), items.dtype)], 1)
  target = np.where(real & (nxt >= 0) & (nxt < logs.n_videos), nxt, -1)
  return dict(items=np.where(real, items, 0).astype(np.int32), mask=real.astype(np.int32),
              target=target.astype(np.int32))


def sasrec_loss(model: SASRec, batch: dict, key):
  loss, _ = masked_ce(model(batch["items"], batch["mask"], key), batch["target"])
  return loss, {}


def sasrec_scores(model: SASRec, batch: dict):
  """Scores of the video at t from the hidden state at t - 1 (tokens < t only)."""
  s = model(batch["items"], batch["mask"])
  return jnp.take_along_axis(s, (batch["t"] - 1)[:, None, None], 1)[:, 0]


# ----------------------------------------------------------------------------- knowledge tracing

def interactions(logs: Logs, question_of_item: np.ndarray, max_len: int) -> dict:
  """Each student's exercise answers only, left-aligned: question [N, M], correct [N, M],
  count [N] (M = max_len)."""
  L = logs.items.shape[1]
  ex = (np.arange(L)[None] < logs.length[:, None]) & (logs.items >= logs.n_videos)
  order = np.argsort(~ex, 1, kind="stable")[:, :max_len]
  q = np.take_along_axis(np.where(ex, question_of_item[np.maximum(logs.items, 0)], 0), order, 1)
  c = np.take_along_axis(np.where(ex, logs.responses == RIGHT, False), order, 1)
  return dict(question=q.astype(np.int32), correct=c.astype(np.int32),
              count=np.minimum(ex.sum(1), max_len).astype(np.int32))


class DKT(nnx.Module):
  """Deep knowledge tracing: x_t = embedding of (skill_t, correct_t); h_t = LSTM(x_t, h_{t-1});
  P(correct at t + 1) = sigmoid(W h_t + b)[skill_{t+1}]."""

  def __init__(self, n_questions: int, hidden: int, *, rngs: nnx.Rngs):
    H = hidden
    normal = nnx.initializers.normal(0.1)
    zeros = lambda k, s, d: jnp.zeros(s, d)
    self.embed = param(rngs.params(), normal, (2 * n_questions, H), (None, None))
    self.w_x = param(rngs.params(), nnx.initializers.lecun_normal(), (H, 4 * H), (None, None))
    self.w_h = param(rngs.params(), nnx.initializers.orthogonal(), (H, 4 * H), (None, None))
    self.b = param(None, zeros, (4 * H,), (None,))
    self.w_out = param(rngs.params(), nnx.initializers.lecun_normal(), (H, n_questions), (None, None))
    self.b_out = param(None, zeros, (n_questions,), (None,))

  def __call__(self, batch: dict, key=None):
    """[N, M - 1] logits for answers 1..M-1."""
    x = self.embed.get_value()[2 * batch["question"] + batch["correct"]]          # [N, M, H]
    xw = x @ self.w_x.get_value() + self.b.get_value()
    N, H = x.shape[0], x.shape[-1]

    def cell(carry, xt):
      h, cc = carry
      z = xt + h @ self.w_h.get_value()
      i, f, g, o = jnp.split(z, 4, -1)
      cc = jax.nn.sigmoid(f + 1.0) * cc + jax.nn.sigmoid(i) * jnp.tanh(g)
      h = jax.nn.sigmoid(o) * jnp.tanh(cc)
      return (h, cc), h

    _, hs = jax.lax.scan(cell, (jnp.zeros((N, H)), jnp.zeros((N, H))), xw.transpose(1, 0, 2))
    logits = hs.transpose(1, 0, 2)[:, :-1] @ self.w_out.get_value() + self.b_out.get_value()
    return jnp.take_along_axis(logits, batch["question"][:, 1:, None], -1)[..., 0]


class SAKT(nnx.Module):
  """Self-attentive knowledge tracing: the query at step t is the embedding of exercise t + 1,
  keys and values the embeddings of interactions <= t (+ positions); one multi-head attention
  block with residual + LayerNorm and a feed-forward block, then a logit."""

  def __init__(self, n_questions: int, hidden: int, heads: int, max_len: int, dropout: float,
               *, rngs: nnx.Rngs):
    self.inter = nnx.Embed(2 * n_questions, hidden, rngs=rngs)
    self.query = nnx.Embed(n_questions, hidden, rngs=rngs)
    self.pos = nnx.Embed(max_len, hidden, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(num_heads=heads, in_features=hidden, decode=False,
                                       dropout_rate=0.0, rngs=rngs)
    self.ln1 = nnx.LayerNorm(hidden, rngs=rngs)
    self.ff1 = nnx.Linear(hidden, hidden, rngs=rngs)
    self.ff2 = nnx.Linear(hidden, hidden, rngs=rngs)
    self.ln2 = nnx.LayerNorm(hidden, rngs=rngs)
    self.head = nnx.Linear(hidden, 1, rngs=rngs)
    self.dropout = dropout

  def __call__(self, batch: dict, key=None):
    q, c = batch["question"], batch["correct"]
    M = q.shape[1]
    kv = self.inter(2 * q[:, :-1] + c[:, :-1]) + self.pos(jnp.arange(M - 1))[None]
    qu = self.query(q[:, 1:])
    causal = jnp.tril(jnp.ones((M - 1, M - 1), bool))[None, None]
    a = self.attn(qu, kv, kv, mask=causal)
    if key is not None and self.dropout > 0:
      a = jnp.where(jax.random.bernoulli(key, 1 - self.dropout, a.shape), a / (1 - self.dropout), 0)
    h = self.ln1(a + qu)
    h = self.ln2(h + self.ff2(jax.nn.relu(self.ff1(h))))
    return self.head(h)[..., 0]


def kt_seq_loss(model, batch: dict, key):
  """Binary cross-entropy over answers 1..count-1 of each student."""
  logit = model(batch, key)
  M = batch["question"].shape[1]
  valid = (jnp.arange(1, M)[None] < batch["count"][:, None]).astype(jnp.float32)
  y = batch["correct"][:, 1:].astype(jnp.float32)
  nll = jax.nn.softplus(logit) - y * logit
  return (nll * valid).sum() / jnp.maximum(valid.sum(), 1), {}


def kt_seq_predictions(logits: np.ndarray, count: np.ndarray) -> np.ndarray:
  """The logits of answers 1..count-1 of each student, in student then time order."""
  M = logits.shape[1] + 1
  valid = np.arange(1, M)[None] < count[:, None]
  return logits[valid]


# ----------------------------------------------------------------------------- dropout

FEATURES = ("watches", "exercises", "accuracy", "completion", "low_completion", "courses",
            "jumps", "recent_accuracy", "recent_completion")


def activity_features(items, responses, obs: int, n_videos: int, video_next, item_course):
  """[N, 9] activity features of the first `obs` tokens (FEATURES)."""
  it, rs = items[:, :obs], responses[:, :obs]
  real = it >= 0
  is_v, is_x = real & (it < n_videos), real & (it >= n_videos)
  watches, exercises = is_v.sum(1), is_x.sum(1)
  right = (is_x & (rs == RIGHT)).sum(1)
  comp = np.where(is_v, rs, 0).sum(1) / np.maximum(watches, 1) / 3.0
  low = (is_v & (rs == 0)).sum(1) / np.maximum(watches, 1)
  course = np.where(real, item_course[np.maximum(it, 0)], -1)
  courses = np.array([len(set(r[r >= 0])) for r in course])
  jumps = np.zeros(len(it))
  for i in range(len(it)):
    vids = it[i][is_v[i]]
    jumps[i] = np.sum(video_next[vids[:-1]] != vids[1:]) if len(vids) > 1 else 0
  recent_x = is_x & (np.cumsum(is_x[:, ::-1], 1)[:, ::-1] <= 4)
  recent_v = is_v & (np.cumsum(is_v[:, ::-1], 1)[:, ::-1] <= 4)
  r_acc = (recent_x & (rs == RIGHT)).sum(1) / np.maximum(recent_x.sum(1), 1)
  r_comp = np.where(recent_v, rs, 0).sum(1) / np.maximum(recent_v.sum(1), 1) / 3.0
  return np.stack([watches, exercises, right / np.maximum(exercises, 1), comp, low, courses,
                   jumps, r_acc, r_comp], 1).astype(np.float64)


def standardize(train: np.ndarray, *others):
  mu, sd = train.mean(0), train.std(0) + 1e-8
  return [(x - mu) / sd for x in (train,) + others]


def logistic_regression(x: np.ndarray, y: np.ndarray, l2: float, steps: int = 500) -> np.ndarray:
  """Weights [D + 1] (last: bias) minimising mean log-loss + l2/2 |w|^2 (L-BFGS, optax)."""
  xb = jnp.asarray(np.concatenate([x, np.ones((len(x), 1))], 1))
  yj = jnp.asarray(y, jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)

  def f(w):
    z = xb @ w
    return jnp.mean(jax.nn.softplus(z) - yj * z) + 0.5 * l2 * jnp.sum(w[:-1] ** 2)

  opt = optax.lbfgs()
  w = jnp.zeros(xb.shape[1])
  state = opt.init(w)
  vg = optax.value_and_grad_from_state(f)

  @jax.jit
  def step(w, state):
    v, g = vg(w, state=state)
    u, state = opt.update(g, state, w, value=v, grad=g, value_fn=f)
    return optax.apply_updates(w, u), state

  for _ in range(steps):
    w, state = step(w, state)
  return np.asarray(w)


def lr_scores(w: np.ndarray, x: np.ndarray) -> np.ndarray:
  return x @ w[:-1] + w[-1]


# ----------------------------------------------------------------------------- resource evaluation

def ridge(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
  """Weights [D + 1] (last: intercept) of ridge regression on standardized x (no penalty on the
  intercept)."""
  xb = np.concatenate([x, np.ones((len(x), 1))], 1)
  reg = lam * np.eye(xb.shape[1])
  reg[-1, -1] = 0.0
  return np.linalg.solve(xb.T @ xb + reg, xb.T @ y)


def ridge_predict(w: np.ndarray, x: np.ndarray) -> np.ndarray:
  return x @ w[:-1] + w[-1]


def video_behaviour_features(logs: Logs, n_videos: int, concept_of_item: np.ndarray) -> np.ndarray:
  """[V, 4] per video from the logs: log(1 + watches), mean completion quartile, accuracy on the
  next token when it is an exercise of the same concept, and the share of watches after which the
  student's log ends with a dropout within 4 tokens."""
  L = logs.items.shape[1]
  real = np.arange(L)[None] < logs.length[:, None]
  is_v = real & (logs.items >= 0) & (logs.items < n_videos)
  s, t = np.nonzero(is_v)
  v = logs.items[s, t]
  watches = np.bincount(v, minlength=n_videos)
  comp = np.bincount(v, logs.responses[s, t], minlength=n_videos) / np.maximum(watches, 1)
  nt = np.minimum(t + 1, L - 1)
  nxt_item = logs.items[s, nt]
  same = (t + 1 < logs.length[s]) & (nxt_item >= n_videos) & (
      concept_of_item[np.maximum(nxt_item, 0)] == concept_of_item[v])
  right = same & (logs.responses[s, nt] == RIGHT)
  acc = np.bincount(v, right, minlength=n_videos) / np.maximum(np.bincount(v, same, minlength=n_videos), 1)
  ends = logs.dropped[s] & (logs.length[s] - t <= 4)
  drop = np.bincount(v, ends, minlength=n_videos) / np.maximum(watches, 1)
  return np.stack([np.log1p(watches), comp, acc, drop], 1)
