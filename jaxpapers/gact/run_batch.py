"""A child process that trains a GACT level for a few steps at one batch and reports its peak
RSS: `python -m jaxpapers.gact.run_batch SPEC.json` (written by `gact.experiments.execute_batch`:
config, family, level, bits, batch, steps, workdir, seed). Prints one JSON line
{"batch", "steps", "peak_rss_bytes", "step_seconds", "loss"}. On a GPU/TPU a batch that does not
fit fails the process (out of memory); the CPU sets no cap, so there the run shows the batch
executes and its peak RSS (compilation included) is recorded beside L0's."""
from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx


def peak_rss_bytes() -> int:
  """This process's peak RSS (VmHWM). Not getrusage's ru_maxrss: a child started by vfork + exec
  inherits its parent's peak there (it read 22.7 GB for a 2.2 GB child)."""
  for line in Path("/proc/self/status").read_text().splitlines():
    if line.startswith("VmHWM:"):
      return int(line.split()[1]) * 1024
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024     # not Linux: KiB


def main(spec_path: str) -> None:
  from jaxpapers.core.train import TrainState, make_optimizer, make_train_step
  from jaxpapers.gact import adaptive, families
  from jaxpapers.gact.experiments import make_wrap
  spec = json.loads(Path(spec_path).read_text())
  c = ml_collections.ConfigDict(spec["config"])
  fam = families.BUILDERS[spec["family"]](c, spec["seed"], Path(spec["workdir"]))
  level = adaptive.get_level(spec["level"])
  bits = spec["bits"]
  if bits is not None and not level.checkpointed:
    bits = [tuple(b) for b in bits]
  wrap = make_wrap(level, bits)
  k = c[spec["family"]]
  tx = make_optimizer(ml_collections.ConfigDict(dict(k.train)))
  graphdef, params = nnx.split(fam.model, nnx.Param)
  loss_fn = lambda model, batch, rng: (fam.loss(model, batch, wrap,
                                                jax.random.bits(rng, dtype=jnp.uint32)), {})
  step = jax.jit(make_train_step(graphdef, loss_fn, tx), donate_argnums=0)
  state = TrainState(step=jnp.int32(0), params=params, opt_state=tx.init(params),
                     rng=jax.random.key_data(jax.random.key(spec["seed"])))
  batch = fam.example(spec["batch"])
  times, loss = [], None
  for _ in range(spec["steps"]):
    t0 = time.perf_counter()
    state, m = step(state, batch, jnp.float32(1.0))
    loss = float(m["loss"])
    times.append(time.perf_counter() - t0)
  rss = peak_rss_bytes()
  print(json.dumps({"batch": spec["batch"], "steps": spec["steps"], "peak_rss_bytes": rss,
                    "step_seconds": times, "loss": loss}))


if __name__ == "__main__":
  main(sys.argv[1])
