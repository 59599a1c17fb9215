"""Host memory of quantizing a GLM from its FP checkpoint (GLM-130B §5: the release needs more than
260 GB of host RAM to quantize 130B parameters, because the FP model is loaded first).

`measure_quantize_peak_rss` writes a random-weight GLM as an FP checkpoint, quantizes it with
`nn.quantize_stream` in a child process (`python -m jaxpapers.nn.quantize_stream`) and takes that
child's peak RSS from its own VmHWM (/proc/self/status), read as the last thing before it exits:
the kernel's high-water mark of the child's address space, exact rather than sampled, and reset
by exec. (`os.wait4`'s ru_maxrss is not usable here: Linux folds the pre-exec address space, the
parent's copy at fork, into it, so it reports at least the parent's RSS, which holds the FP
model; `RUSAGE_CHILDREN` has the same flaw and is a maximum over all children ever reaped.)
A second child that imports the same modules, starts jax and builds the abstract model, but does
not quantize, gives the interpreter's baseline the same way. The output is loaded back and
compared bitwise, array by array, with the in-memory `quantize` of the same weights.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from jaxpapers.core.errors import CheckpointError
from jaxpapers.glm.model import GLM, GLMConfig
from jaxpapers.nn import quantized as Q
from jaxpapers.nn.quantize_stream import save_fp_params

# The quick preset's stream model: 64 layers of d_model 1024 (12.6 M kernel values a layer, 50.6 MB
# FP32) and an 8192-token vocabulary, 3.28 GB of FP32 weights. One layer is 1.5% of the model and
# the interpreter's ~0.3 GB is under a tenth of it; measured 0.321 (quick run). At 48 layers
# (2.46 GB) the interpreter alone is 0.125 and three runs gave 0.332 / 0.346 / 0.353.
DEFAULT_MODEL = dict(vocab_size=8192, num_layers=64, d_model=1024, num_heads=16)


def abstract_glm(**model) -> GLM:
  """The abstract (shapes only) FP GLM of these GLMConfig fields (dropout 0, no remat)."""
  cfg = GLMConfig(**{"dropout": 0.0, "remat": False, **model})
  return nnx.eval_shape(lambda: GLM(cfg, rngs=nnx.Rngs(params=0)))


def _run_child(args: list[str], log_path: Path) -> float:
  """Runs the child to completion; its wall seconds. CheckpointError if it failed."""
  root = str(Path(__file__).resolve().parents[2])
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
  cmd = [sys.executable, "-m", "jaxpapers.nn.quantize_stream", *args]
  with open(log_path, "w") as out:
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root).returncode
    wall = time.perf_counter() - t0
  if rc:
    last = (log_path.read_text().strip().splitlines() or ["(no output)"])[-1]
    raise CheckpointError(f"the quantization child failed with exit code {rc}: {last}")
  return wall


def measure_quantize_peak_rss(workdir: str | Path, model: dict | None = None,
                              scheme: str = "int4_absmax", seed: int = 0,
                              keep_files: bool = False) -> dict:
  """Peak RSS of streaming quantization in a child, as a fraction of the FP32 weight bytes, and
  the child's output checked bitwise against in-memory `quantize` of the same weights (every
  array). `model`: GLMConfig fields (default DEFAULT_MODEL)."""
  model = dict(DEFAULT_MODEL if model is None else model)
  wd = Path(workdir).absolute()
  wd.mkdir(parents=True, exist_ok=True)
  t_all = time.perf_counter()
  cfg = GLMConfig(**{"dropout": 0.0, "remat": False, **model})
  fp = GLM(cfg, rngs=nnx.Rngs(params=seed))
  jax.block_until_ready(nnx.state(fp))
  fp_bytes = Q.weight_bytes(fp)
  layer_bytes = Q.weight_bytes(fp, kernels_only=True) // cfg.num_layers   # one layer's kernels
  t0 = time.perf_counter()
  src = save_fp_params(wd / "fp32", fp, extra={"config": dataclasses.asdict(cfg)})
  save_s = time.perf_counter() - t0
  dst = wd / f"quantized_{scheme}"
  args = ["--src", str(src), "--dst", str(dst), "--scheme", scheme,
          "--model", "jaxpapers.glm.quantize_memory:abstract_glm",
          "--model-args", json.dumps(model)]
  base_s = _run_child(args + ["--baseline", "--report", str(wd / "baseline.json")],
                                wd / "baseline.log")
  stream_s = _run_child(args + ["--report", str(wd / "stream.json")], wd / "stream.log")
  child = json.loads((wd / "stream.json").read_text())
  base_child = json.loads((wd / "baseline.json").read_text())
  peak_rss, base_rss = child["vmhwm_bytes"], base_child["vmhwm_bytes"]
  if not peak_rss or not base_rss:
    raise RuntimeError("no /proc/self/status VmHWM on this system: peak RSS cannot be measured")
  # the check: every array of the loaded output equals the in-memory quantization (in place)
  back = Q.load_quantized(dst, abstract_glm(**model))
  Q.quantize(fp, scheme)
  mine, theirs = nnx.to_flat_state(nnx.state(back)), nnx.to_flat_state(nnx.state(fp))
  mismatched = [p for (p, a), (p2, b) in zip(mine, theirs)
                if p != p2 or jax.tree.structure(a.get_value()) != jax.tree.structure(b.get_value())
                or not all(x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y))
                           for x, y in zip(jax.tree.leaves(a.get_value()),
                                           jax.tree.leaves(b.get_value())))]
  same = len(mine) == len(theirs) and not mismatched
  q_bytes = Q.weight_bytes(back)
  del back, fp
  if not keep_files:
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(dst, ignore_errors=True)
  return {
      "quantize_peak_rss_ratio": peak_rss / fp_bytes,
      "quantize_peak_rss_bytes": peak_rss,
      "quantize_baseline_rss_bytes": base_rss,
      "quantize_peak_rss_above_baseline_ratio": (peak_rss - base_rss) / fp_bytes,
      "quantize_fp32_weight_bytes": fp_bytes,
      "quantize_fp32_layer_kernel_bytes": layer_bytes,
      "quantize_quantized_weight_bytes": q_bytes,
      "quantize_stream_scheme": scheme,
      "quantize_stream_model": model,
      "quantize_stream_max_read_bytes": child["max_read_bytes"],
      "quantize_stream_layers_per_read": child["layers_per_read"],
      "quantize_stream_bytes_read": child["bytes_read"],
      "quantize_stream_seconds": child["seconds"],
      "quantize_stream_child_wall_s": stream_s,
      "quantize_baseline_child_wall_s": base_s,
      "quantize_fp_save_s": save_s,
      "quantize_stream_equals_in_memory": same,
      "quantize_stream_arrays_checked": len(mine),
      "quantize_stream_mismatched": ["/".join(map(str, p)) for p in mismatched],
      "quantize_measure_wall_s": time.perf_counter() - t_all,
  }


if __name__ == "__main__":
  out = measure_quantize_peak_rss(sys.argv[1] if len(sys.argv) > 1 else "/tmp/quantize_memory")
  print(json.dumps(out, indent=1))
