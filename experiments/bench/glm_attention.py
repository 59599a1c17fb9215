"""Where GLM's train step loses to PyTorch (issue 20): its attention, timed alone, in one process.

  python experiments/bench/glm_attention.py [--batch 8 --seq_len 256 --heads 8 --head_dim 64]
                                            [--reps 8 --rounds 3]

Each figure is the median over --rounds interleaved rounds of the best of --reps calls (this
machine is shared and its speed drifts):
  attention's forward and forward + backward, the project's `nn.attention.layer_scaled_attention`
  with GLM's mask (bidirectional context, causal rest) passed as an argument as the model does,
  and the same computed in the [B, H, T, D] layout (transposed inside, as PyTorch computes it);
  the batched matmul QK^T alone (its GFLOP/s) and one square matmul of the same FLOPs;
  with torch installed (not a dependency): `scaled_dot_product_attention` with the same boolean
  mask, given [B, T, H, D] tensors as transposed views and its output transposed back, as the
  PyTorch GLM (glm_torch.py) calls it, forward and forward + backward; torch's batched matmul and
  square matmul. Prints JSON (milliseconds, GFLOP/s). The backward is of sum(out * w) for a fixed
  random w, with respect to q, k and v.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxpapers.nn.attention import NEG_INF, layer_scaled_attention


def _ms(fn, reps: int) -> float:
  fn()
  ts = []
  for _ in range(reps):
    t0 = time.perf_counter()
    fn()
    ts.append(time.perf_counter() - t0)
  return 1000 * min(ts)


def transposed_attention(q, k, v, mask, layer_index):
  """layer_scaled_attention computed in the [B, H, T, D] layout (the same numbers)."""
  coeff = jnp.float32(layer_index) + 1.0
  scale = 1.0 / (jnp.sqrt(jnp.float32(q.shape[-1])) * coeff)
  qt, kt, vt = (jnp.swapaxes(x, 1, 2) for x in (q * scale, k, v))
  s = jnp.matmul(qt, jnp.swapaxes(kt, -1, -2)) * coeff
  p = jax.nn.softmax(jnp.where(mask[:, None], s, NEG_INF), axis=-1)
  return jnp.swapaxes(jnp.matmul(p, vt), 1, 2)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--seq_len", type=int, default=256)
  ap.add_argument("--heads", type=int, default=8)
  ap.add_argument("--head_dim", type=int, default=64)
  ap.add_argument("--reps", type=int, default=8)
  ap.add_argument("--rounds", type=int, default=3)
  a = ap.parse_args()
  B, T, H, D = a.batch, a.seq_len, a.heads, a.head_dim
  rng = np.random.default_rng(0)
  q, k, v, w = (rng.standard_normal((B, T, H, D)).astype(np.float32) for _ in range(4))
  context = rng.integers(T // 8, T // 2, B)
  j = np.arange(T)
  mask = (j[None, None, :] < context[:, None, None]) | (j[None, None, :] <= j[None, :, None])
  jq, jk, jv, jw, jm = map(jnp.asarray, (q, k, v, w, mask))
  layer = 3
  timers = {}
  for name, att in (("jax_bqhd", layer_scaled_attention), ("jax_bhtd", transposed_attention)):
    fwd = jax.jit(lambda q, k, v, m, att=att: att(q, k, v, m, layer))
    grad = jax.jit(jax.grad(lambda q, k, v, m, w, att=att: (att(q, k, v, m, layer) * w).sum(),
                            (0, 1, 2)))
    timers[f"{name}_fwd"] = lambda f=fwd: f(jq, jk, jv, jm).block_until_ready()
    timers[f"{name}_fwd_bwd"] = lambda g=grad: jax.block_until_ready(g(jq, jk, jv, jm, jw))
  qh, kh = jnp.swapaxes(jq, 1, 2), jnp.swapaxes(jk, 1, 2)
  bmm = jax.jit(lambda x, y: jnp.matmul(x, jnp.swapaxes(y, -1, -2)))
  timers["jax_bmm_qk"] = lambda: bmm(qh, kh).block_until_ready()
  side = round((B * H * T * T * D) ** (1 / 3))
  big = jnp.asarray(rng.standard_normal((side, side)).astype(np.float32))
  mm = jax.jit(jnp.matmul)
  timers["jax_matmul_same_flops"] = lambda: mm(big, big).block_until_ready()
  facts = {"torch": "not installed"}
  if importlib.util.find_spec("torch") is not None:
    import torch  # noqa: PLC0415 (optional)
    F = torch.nn.functional
    # [B, T, H, D] storage seen as [B, H, T, D] views, as glm_torch.py hands them to SDPA
    tq, tk, tv = (torch.from_numpy(x).transpose(1, 2) for x in (q, k, v))
    tw = torch.from_numpy(w)
    tmask = torch.from_numpy(mask)[:, None]
    scale = 1.0 / np.sqrt(D)

    def sdpa(q, k, v):
      return F.scaled_dot_product_attention(q, k, v, attn_mask=tmask, scale=scale).transpose(1, 2)

    ref = np.asarray(layer_scaled_attention(jq, jk, jv, jm, layer))
    facts = {"torch": torch.__version__, "threads": torch.get_num_threads(),
             "sdpa_max_abs_diff": float(np.abs(sdpa(tq, tk, tv).numpy() - ref).max())}
    gq, gk, gv = (x.detach().clone().requires_grad_() for x in (tq, tk, tv))

    def torch_fwd_bwd():
      for x in (gq, gk, gv):
        x.grad = None
      (sdpa(gq, gk, gv) * tw).sum().backward()

    def torch_fwd():
      with torch.no_grad():
        return sdpa(tq, tk, tv)

    th, tkh = tq.contiguous(), tk.contiguous()
    tbig = torch.from_numpy(np.array(big))
    timers["torch_sdpa_fwd"] = torch_fwd
    timers["torch_sdpa_fwd_bwd"] = torch_fwd_bwd
    timers["torch_bmm_qk"] = lambda: th @ tkh.transpose(-1, -2)
    timers["torch_matmul_same_flops"] = lambda: tbig @ tbig
  rounds = {name: [] for name in timers}
  for _ in range(a.rounds):
    for name, fn in timers.items():
      rounds[name].append(_ms(fn, a.reps))
  ms = {name: round(statistics.median(r), 2) for name, r in rounds.items()}
  gflop = 2 * B * H * T * T * D / 1e9
  rate = {name: round(gflop / (ms[name] / 1000), 1) for name in ms
          if "bmm" in name or "matmul" in name}
  print(json.dumps({"shape": {"batch": B, "seq_len": T, "heads": H, "head_dim": D},
                    "ms": ms, "gflop_per_s": rate, "spread_ms": {k: [round(min(r), 2), round(max(r), 2)]
                                                               for k, r in rounds.items()},
                    **facts}, indent=1))


if __name__ == "__main__":
  main()
