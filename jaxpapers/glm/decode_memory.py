"""Host memory of batch-1 decode as process RSS, beside XLA's compiled figure of one step.

`measure_decode_rss` runs one child process per scheme (`python -m jaxpapers.glm.decode_memory`):
the child builds the decode GLM with random weights, quantizes it in place (unless fp32), takes
`decode_weights()` and drops the model, hands freed memory back to the OS, and then samples its
own RSS while it decodes: `ready` is the RSS before the first token (interpreter, jax, the decode
weights), `peak` the highest sample during prefill and decode (plus the KV cache, the compiled
steps and their temporaries). A child per scheme, because in one process the schemes' weights
and freed pages would mix.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

from jaxpapers.core.errors import JaxpapersError


def _child(args) -> dict:
  import jax
  import numpy as np
  from flax import nnx

  from jaxpapers.core.memory import PeakRSS, rss_bytes, trim_heap
  from jaxpapers.glm.model import GLM, GLMConfig
  from jaxpapers.glm.quantize_experiment import decode_seconds
  from jaxpapers.nn import quantized as Q

  cfg = GLMConfig(**{"dropout": 0.0, "remat": False, **json.loads(args.model)})
  model = GLM(cfg, rngs=nnx.Rngs(params=args.seed))
  if args.scheme != "fp32":
    Q.quantize(model, args.scheme)
  weights = model.decode_weights()
  read_bytes = Q.weight_bytes(model)
  jax.block_until_ready(weights)
  del model
  gc.collect()
  trim_heap()   # so `ready` does not count the FP model
  prompt = np.random.default_rng(args.seed).integers(0, cfg.vocab_size, args.prompt_len)
  ready = rss_bytes()
  with PeakRSS() as m:
    seconds = decode_seconds(cfg, weights, prompt, args.new_tokens)
  return {"scheme": args.scheme, "ready_rss_bytes": ready, "peak_rss_bytes": m.peak,
          "weight_bytes": read_bytes, "seconds_per_token": seconds}


def measure_decode_rss(workdir: str | Path, model: dict, schemes=("fp32", "int4_absmax"),
                       prompt_len: int = 16, new_tokens: int = 8, seed: int = 0) -> dict:
  """{scheme: child report} plus `decode_peak_rss_ratio_int4` (INT4 peak ÷ FP32 peak)."""
  wd = Path(workdir).absolute()
  wd.mkdir(parents=True, exist_ok=True)
  root = str(Path(__file__).resolve().parents[2])
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
  out = {}
  for scheme in schemes:
    report = wd / f"decode_rss_{scheme}.json"
    cmd = [sys.executable, "-m", "jaxpapers.glm.decode_memory", "--model", json.dumps(model),
           "--scheme", scheme, "--prompt-len", str(prompt_len), "--new-tokens", str(new_tokens),
           "--seed", str(seed), "--report", str(report)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root)
    if res.returncode:
      last = (res.stderr.strip().splitlines() or ["(no output)"])[-1]
      raise JaxpapersError(f"the decode-memory child for {scheme} failed (exit {res.returncode}): {last}")
    out[scheme] = json.loads(report.read_text())
  result = {"decode_rss": out}
  if "fp32" in out and "int4_absmax" in out:
    result["decode_peak_rss_ratio_int4"] = (out["int4_absmax"]["peak_rss_bytes"]
                                            / out["fp32"]["peak_rss_bytes"])
  return result


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--model", required=True, help="GLMConfig fields as JSON")
  ap.add_argument("--scheme", required=True, help="fp32 or a quantization scheme")
  ap.add_argument("--prompt-len", type=int, default=16)
  ap.add_argument("--new-tokens", type=int, default=8)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--report", required=True)
  args = ap.parse_args(argv)
  try:
    Path(args.report).write_text(json.dumps(_child(args)))
  except JaxpapersError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  # large blocks from their own mmap, returned when freed (process-wide: only in the child)
  from jaxpapers.core.memory import return_freed_memory_to_os
  return_freed_memory_to_os()
  sys.exit(main())
