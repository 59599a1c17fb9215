"""EH-FT's classifier: a pretrained encoder and an MLP head, and the two-stage handover.

EH-FT (arXiv 2210.16771 §3): stage 1 trains a PET method (LoRA, BitFit or prefix tuning)
together with a freshly initialised classification head while the backbone stays frozen; stage 2
discards the PET parameters, restarts from the pretrained backbone with the stage-1 head, and
fine-tunes everything with a fresh optimizer. The head follows the released code (THUDM
Efficient-Head-Finetuning, `finetune_roberta.py` / SwissArmyTransformer `mlp_head.py`): the final
hidden state of the first token ([CLS]) -> Linear(E, 2E) -> ReLU -> Linear(2E, out), weights
N(0, 0.005), biases as torch.nn.Linear's default; a two-class task has one logit (binary cross
entropy), more classes one logit each (cross entropy).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxpapers.nn.bert import Bert, mean_pool
from jaxpapers.nn.param import param, uniform_fan_in


class MLPHead(nnx.Module):
  def __init__(self, hidden: int, num_classes: int, *, rngs: nnx.Rngs):
    out = 1 if num_classes == 2 else num_classes
    w = nnx.initializers.normal(0.005)
    self.w1 = param(rngs.params(), w, (hidden, 2 * hidden), ("embed", "mlp"))
    self.b1 = param(rngs.params(), uniform_fan_in(hidden), (2 * hidden,), ("mlp",))
    self.w2 = param(rngs.params(), w, (2 * hidden, out), ("mlp", None))
    self.b2 = param(rngs.params(), uniform_fan_in(2 * hidden), (out,), (None,))

  def __call__(self, x):
    h = jax.nn.relu(x @ self.w1.get_value() + self.b1.get_value())
    return h @ self.w2.get_value() + self.b2.get_value()


class Classifier(nnx.Module):
  """encoder (a `Bert`, possibly with PET parameters) + `head`; `pool`: 'cls' (the paper's)
  or 'mean'."""

  def __init__(self, encoder: Bert, num_classes: int, pool: str = "cls", *, rngs: nnx.Rngs):
    if pool not in ("cls", "mean"):
      raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
    self.encoder = encoder
    self.num_classes = num_classes
    self.pool = pool
    self.head = MLPHead(encoder.cfg.hidden, num_classes, rngs=rngs)

  def features(self, batch: dict, dropout_key=None):
    """The head's input: the final-layer feature of each example [B, E]."""
    h = self.encoder(batch["ids"], batch["mask"], batch["type_ids"], dropout_key=dropout_key)
    return h[:, 0] if self.pool == "cls" else mean_pool(h, batch["mask"], normalize=False)

  def __call__(self, batch: dict, dropout_key=None):
    return self.head(self.features(batch, dropout_key))


def with_head_of(backbone: Bert, trained: Classifier) -> Classifier:
  """Stage 2's starting point: `backbone` (the pretrained encoder, no PET parameters) and a copy
  of `trained`'s head."""
  model = Classifier(backbone, trained.num_classes, trained.pool, rngs=nnx.Rngs(0))
  nnx.update(model.head, jax.tree.map(jnp.copy, nnx.state(trained.head)))
  return model


def loss_fn(model: Classifier, batch: dict, dropout_key) -> tuple[jax.Array, dict]:
  """Mean cross entropy (binary with one logit for two classes) and the batch accuracy."""
  logits = model(batch, dropout_key)
  y = batch["y"]
  if logits.shape[-1] == 1:
    z = logits[:, 0]
    loss = optax.sigmoid_binary_cross_entropy(z, y.astype(z.dtype)).mean()
    pred = (z > 0).astype(y.dtype)
  else:
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    pred = jnp.argmax(logits, -1).astype(y.dtype)
  return loss, {"accuracy": jnp.mean(pred == y)}


def predict(logits) -> jax.Array:
  return (logits[:, 0] > 0).astype(jnp.int32) if logits.shape[-1] == 1 else jnp.argmax(logits, -1)
