"""GLM-130B weight-only INT8/INT4 quantization of a trained GLM (arXiv 2210.02414 §5, Table 10).

Presets: default (trains the default glm/pretrain preset in the same workdir, ~54 min since that
preset became 4 x 256 for 2,100 steps, then quantizes it), `quick` (trains the quick GLM first;
4.9 min measured on 2 idle cores), `tiny` (seconds; tests).
`--config.source_workdir=DIR` quantizes a finished glm/pretrain run instead of training one."""
import importlib.util
from pathlib import Path

import ml_collections

PRESETS = (None, "default", "quick", "tiny")


def _pretrain_config(arg):
  spec = importlib.util.spec_from_file_location("_glm_pretrain_cfg", Path(__file__).with_name("pretrain.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = "glm/quantize"
  c.seed = 0
  c.source_workdir = ""          # a finished glm/pretrain workdir; "" trains one in <workdir>/pretrain
  c.pretrain = _pretrain_config(arg)
  c.schemes = ("int8", "int4_absmax", "int4_zeropoint", "int4_group")
  c.group_size = 64              # int4_group: one scale per 64 inputs (divides d_model and the FFN)
  # Decode benchmark model (random weights): 6 layers at d_model 2048 = 1.2 GB of FP32 weights,
  # more than this machine's caches, so batch-1 decode is bound by reading weights.
  c.decode = dict(d_model=2048, num_layers=6, num_heads=16, vocab_size=1024, prompt_len=16,
                  new_tokens=16, repeats=3, seed=0,
                  rss_children=True)   # decode memory as process RSS, a child per scheme (~1 min)
  # Streaming quantization (from the FP checkpoint, one layer at a time, in a child process):
  # 64 layers of d_model 1024, 3.3 GB of FP32 weights, so one layer is 1.5% of the model and the
  # interpreter's own ~0.3 GB is under a tenth of it; about 1.5 minutes on 2 cores. (At 48 layers,
  # 2.46 GB, three runs gave 0.332 / 0.346 / 0.353: the interpreter alone is 0.125 there.)
  c.stream = dict(d_model=1024, num_layers=64, num_heads=16, vocab_size=8192, scheme="int4_absmax")
  if arg == "tiny":
    c.group_size = 32
    c.decode.update(d_model=128, num_layers=2, num_heads=4, vocab_size=512, prompt_len=4,
                    new_tokens=3, repeats=1, rss_children=False)   # (tested in-process)
    c.stream.update(d_model=64, num_layers=4, num_heads=4, vocab_size=256)
  return c
