"""8 fake CPU devices, set before jax is imported, so sharding is tested for real."""
import os
import sys
from pathlib import Path

# The suite is compile-bound (tiny models, many programs): without the backend's (LLVM's) code
# optimisation XLA compiles about 2.5x faster on this CPU (a cold tiny GLM run: 25 s -> 10 s of
# compilation; gact/memory end to end 101 s -> 74 s; kgt/queries tiny 60 s -> 29 s) and the tiny
# programs run no slower overall. The HLO passes (fusion, layout, buffer assignment: the temp
# bytes the memory tests read) are unchanged; only the emitted machine code is less optimised.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8"
                           " --xla_backend_optimization_level=0").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache for the test session, shared by its xdist workers (which
# inherit this environment) and by the CLI subprocesses some tests start (kill-and-resume runs one
# program three times): an executable compiled once is loaded, not compiled again. Compiled code
# is deterministic, so this changes only the time. Removed at the end of the session.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
  import tempfile  # noqa: E402
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxpapers-test-jit-cache-")
  # Every program is cached, however fast it compiled: a tiny GLM run of a CLI subprocess
  # compiles ~70 programs of under 0.5 s each (3 s in all), which the next run of the same
  # command loads in a fraction of that (a tiny run 12 s -> 10 s). The xdist workers and the
  # subprocesses inherit this; the suite was measured so (765 s on 2 idle cores, 2026-12-07).
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import lzma  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
  """The first 400 kB of the embedded Austen corpus as a .txt file (fast tokenizer training)."""
  from importlib import resources
  raw = resources.files("jaxpapers.data").joinpath("assets", "austen.txt.xz").read_bytes()
  text = lzma.decompress(raw).decode("utf-8")[:400_000]
  path = tmp_path_factory.mktemp("corpus") / "small.txt"
  path.write_text(text)
  return path


# XLA flags of the CLI subprocesses whose tests compare runs with each other (resumed vs
# uninterrupted, two processes vs one), not against code compiled in the test process: without
# the backend's (LLVM's) code optimisation a cold tiny GLM run compiles in 10 s instead of 25 s
# (measured on this CPU). Both sides of every comparison get the same flags, so what they test
# (bitwise resume, equal losses) is unchanged; only the machine code is less optimised.
SUBPROCESS_XLA_FLAGS = "--xla_backend_optimization_level=0"


def tiny_glm_args(corpus: Path, workdir: Path, *extra: str) -> list[str]:
  return ["run", "glm/pretrain", "--preset", "tiny", "--workdir", str(workdir),
          f"--config.data.corpus={corpus}", *extra]


def assert_close_scaled(actual, reference, rel: float, *, per_leaf: bool = True,
                        err_msg: str = "") -> None:
  """Each array (each leaf of a pytree): max|actual - reference| <= rel * max|reference|, the max
  over that leaf, or with per_leaf=False over the whole tree.

  For arrays computed in two summation orders or layouts (micro-batched or whole, sharded or
  not, chunked, scanned, a kernel or its reference): float rounding moves every element by a few
  ulps of the magnitudes summed into it, so the error is bounded relative to the array's
  magnitude, not to each element's (an entry that is a cancellation of large terms can lose
  every significant digit). The bound is the array's own scale, so it is never looser than
  `rel` for the largest entries; a wrong part, row or shard moves entries by O(max|ref|).
  per_leaf=False is for trees whose leaves' errors do not scale with the leaf: parameters after
  Adam steps, where every entry moves by about lr per step whatever its gradient's size (a
  rounding difference in a near-zero gradient changes its normalised update by O(lr)).
  """
  import jax
  import numpy as np
  a_leaves, a_def = jax.tree.flatten(actual)
  r_leaves, r_def = jax.tree.flatten(reference)
  assert a_def == r_def, f"{err_msg} tree structures differ: {a_def} vs {r_def}"
  tree_scale = max((float(np.abs(np.asarray(r, np.float64)).max()) for r in r_leaves
                    if np.size(r)), default=0.0)
  for i, (a, r) in enumerate(zip(a_leaves, r_leaves)):
    a = np.asarray(a, np.float64)
    r = np.asarray(r, np.float64)
    assert a.shape == r.shape, f"{err_msg} leaf {i}: shapes {a.shape} vs {r.shape}"
    if a.size == 0:
      continue
    assert np.isfinite(a).all() and np.isfinite(r).all(), f"{err_msg} leaf {i}: non-finite values"
    err, scale = np.abs(a - r).max(), (np.abs(r).max() if per_leaf else tree_scale)
    assert err <= rel * scale, (f"{err_msg} leaf {i} {r.shape}: max|a - r| = {err:.3g} > "
                                f"{rel:g} * max|r| = {rel * scale:.3g} (at "
                                f"{np.unravel_index(np.abs(a - r).argmax(), r.shape)})")


sys.modules.setdefault("jp_testutil", sys.modules[__name__])


def pytest_sessionfinish(session):
  if _OWN_CACHE and not hasattr(session.config, "workerinput"):   # the controller (or no xdist)
    import shutil
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


# The slowest files, longest first (seconds per file, `pytest -n 2 --durations=0` on 2 idle cores,
# 2026-12-07; core/test_faults.py and core/test_workdir.py after this session's cuts):
# `--dist loadfile` hands files out in collection order (see pytest_configure), so a slow file
# collected last leaves the other worker idle while it runs. Other files keep their order.
SLOW_FIRST = (
    "vpt/test_vpt_pipeline.py",          # 133
    "gact/test_memory_experiment.py",    # 81
    "core/test_workdir.py",              # 75
    "core/test_train.py",                # 71
    "glm/test_trained_run.py",           # 64
    "gact/test_compress.py",             # 63
    "core/test_faults.py",               # 60
    "mooc/test_mooc_pretrain.py",        # 59
    "vpt/test_vpt_models.py",            # 56
    "retrieval/test_retrieval_transfer.py",   # 56
    "gact/test_levels.py",               # 51
    "pethead/test_pethead_suite.py",     # 50
    "cogvideo/test_cogvideo_experiment.py",   # 48
    "nn/test_quantized.py",              # 45
    "cogvideo/test_cogvideo_model.py",   # 42
    "glm/test_model.py",                 # 41
)


def pytest_configure(config):
  # pytest-xdist (>= 3.5) hands out the files with the most tests first unless told to keep the
  # collection order (--no-loadscope-reorder, since 3.8; pyproject.toml requires it): a one-test
  # file of 90 s then ran last, alone
  if hasattr(config.option, "loadscopereorder"):
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
  rank = {name: i for i, name in enumerate(SLOW_FIRST)}

  tests = (REPO / "tests").resolve()

  def key(item):
    path = Path(item.path).resolve()
    rel = path.relative_to(tests).as_posix() if path.is_relative_to(tests) else ""
    return rank.get(rel, len(SLOW_FIRST))
  items.sort(key=key)     # stable: within a file and among the other files, the order is kept
