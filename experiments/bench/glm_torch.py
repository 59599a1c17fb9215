"""The GLM of `jaxpapers.glm.model` written in idiomatic PyTorch, for `glm_step.py` to time the
same model's train step in both frameworks in one process (torch is not a dependency of the
project; the bench skips this when torch is not installed).

Same mathematics as the JAX model, from the same weights: tied embeddings with the embedding
gradient shrink (identity forward, gradient x alpha), DeepNorm layers (a = LN1(h);
h' = alpha a + Attn(a); m = LN2(h'); out = alpha m + FFN(m)), RoPE over the full head dimension
(rotate-half), attention whose first `context_len` keys are visible to every query and the rest
causally, GeGLU with the gate in the second half, a final LayerNorm, and the weighted token
cross-entropy. Written as a PyTorch user would: one fused QKV `F.linear`, and
`F.scaled_dot_product_attention` (in FP32 the layer-scaled softmax of GLM-130B §2.3 is the same
softmax up to rounding). AdamW with global-norm clipping, as `core.train.make_optimizer`.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


class _Shrink(torch.autograd.Function):
  """Identity forward, gradient times alpha (GLM-130B §3)."""

  @staticmethod
  def forward(ctx, x, alpha):
    ctx.alpha = alpha
    return x.view_as(x)

  @staticmethod
  def backward(ctx, g):
    return g * ctx.alpha, None


def _rotate_half(x):
  x1, x2 = x.chunk(2, dim=-1)
  return torch.cat([-x2, x1], dim=-1)


class TorchGLM(torch.nn.Module):

  def __init__(self, cfg, params: dict):
    """params: the JAX model's parameters as numpy arrays (`nnx.state(model, nnx.Param)`)."""
    super().__init__()
    self.cfg = cfg
    L, E, H, D, Fd = cfg.num_layers, cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.ffn
    # a copy: numpy views of JAX arrays are read-only, and the optimizer updates these in place
    t = lambda a: torch.nn.Parameter(torch.from_numpy(np.array(a, np.float32)))
    p = params
    self.embed = t(p["embed"])
    # [L, E, H, D] -> [L, 3 H D, E]: F.linear's [out, in] layout, q, k, v stacked
    qkv = np.concatenate([p[n].reshape(L, E, H * D) for n in ("wq", "wk", "wv")], axis=2)
    self.w_qkv = t(qkv.transpose(0, 2, 1))
    self.b_qkv = t(np.concatenate([p[n].reshape(L, H * D) for n in ("bq", "bk", "bv")], axis=1))
    self.w_o = t(p["wo"].reshape(L, H * D, E).transpose(0, 2, 1))
    self.b_o = t(p["bo"])
    self.w_in = t(p["w_in"].reshape(L, E, 2 * Fd).transpose(0, 2, 1))
    self.b_in = t(p["b_in"].reshape(L, 2 * Fd))
    self.w_out = t(p["w_out"].transpose(0, 2, 1))
    self.b_out = t(p["b_out"])
    self.ln = torch.nn.ParameterList([t(p[n]) for n in ("ln1_scale", "ln1_bias", "ln2_scale",
                                                          "ln2_bias")])
    self.final_scale, self.final_bias = t(p["final_scale"]), t(p["final_bias"])

  def forward(self, tokens, positions, context_len):
    cfg = self.cfg
    B, T = tokens.shape
    H, D, E = cfg.num_heads, cfg.head_dim, cfg.d_model
    alpha = cfg.deepnorm_alpha
    x = F.embedding(tokens, _Shrink.apply(self.embed, cfg.emb_grad_shrink))
    inv = cfg.rope_base ** (-torch.arange(0, D, 2, dtype=torch.float32) / D)
    ang = positions.float()[..., None] * inv
    ang = torch.cat([ang, ang], -1)[:, None]                   # [B, 1, T, D]
    cos, sin = ang.cos(), ang.sin()
    j = torch.arange(T)
    mask = (j[None, None, :] < context_len[:, None, None]) | (j[None, None, :] <= j[None, :, None])
    mask = mask[:, None]                                        # [B, 1, T, T]
    ln1s, ln1b, ln2s, ln2b = self.ln
    for l in range(cfg.num_layers):
      a = F.layer_norm(x, (E,), ln1s[l], ln1b[l], 1e-5)
      q, k, v = F.linear(a, self.w_qkv[l], self.b_qkv[l]).view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)
      q = q * cos + _rotate_half(q) * sin
      k = k * cos + _rotate_half(k) * sin
      ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
      attn = F.linear(ctx.transpose(1, 2).reshape(B, T, H * D), self.w_o[l], self.b_o[l])
      h = alpha * a + attn
      m = F.layer_norm(h, (E,), ln2s[l], ln2b[l], 1e-5)
      u, g = F.linear(m, self.w_in[l], self.b_in[l]).chunk(2, dim=-1)
      x = alpha * m + F.linear(u * F.gelu(g), self.w_out[l], self.b_out[l])
    x = F.layer_norm(x, (E,), self.final_scale, self.final_bias, 1e-5)
    return x @ self.embed.T

  def loss(self, batch: dict):
    logits = self(batch["tokens"], batch["positions"], batch["context_len"])
    nll = F.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten(), reduction="none")
    w = batch["weights"].flatten()
    return (nll * w).sum() / w.sum().clamp_min(1.0)


def grads_in_jax_layout(model: TorchGLM) -> dict:
  """The .grad of every parameter, laid out and named as the JAX model's parameters."""
  cfg = model.cfg
  L, E, H, D, Fd = cfg.num_layers, cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.ffn
  g = lambda p: p.grad.detach().numpy()
  qkv = g(model.w_qkv).transpose(0, 2, 1).reshape(L, E, 3, H, D)
  bqkv = g(model.b_qkv).reshape(L, 3, H, D)
  out = {n: qkv[:, :, i] for i, n in enumerate(("wq", "wk", "wv"))}
  out |= {n: bqkv[:, i] for i, n in enumerate(("bq", "bk", "bv"))}
  out |= {"wo": g(model.w_o).transpose(0, 2, 1).reshape(L, H, D, E), "bo": g(model.b_o),
          "w_in": g(model.w_in).transpose(0, 2, 1).reshape(L, E, 2, Fd),
          "b_in": g(model.b_in).reshape(L, 2, Fd), "w_out": g(model.w_out).transpose(0, 2, 1),
          "b_out": g(model.b_out), "embed": g(model.embed), "final_scale": g(model.final_scale),
          "final_bias": g(model.final_bias)}
  out |= {n: g(p) for n, p in zip(("ln1_scale", "ln1_bias", "ln2_scale", "ln2_bias"), model.ln)}
  return out


def make_step(model: TorchGLM, t, compiled: bool = False):
  """One AdamW train step with global-norm clipping (t: the JAX run's train config); with
  `compiled`, the loss (forward, and through AOTAutograd its backward) under `torch.compile`
  (default inductor backend), the optimizer eager."""
  opt = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=(t.b1, t.b2), eps=t.eps,
                          weight_decay=t.weight_decay)
  loss_fn = torch.compile(model.loss) if compiled else model.loss

  def step(batch):
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(batch)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), t.clip)
    opt.step()
    return loss

  return step


def to_torch(batch: dict) -> dict:
  out = {k: torch.from_numpy(np.array(v)) for k, v in batch.items()}
  out["tokens"], out["targets"] = out["tokens"].long(), out["targets"].long()
  return out
