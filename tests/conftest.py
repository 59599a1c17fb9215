"""8 fake CPU devices, set before jax is imported, so sharding is tested for real."""
import os
import sys
from pathlib import Path

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache for the test session, shared by its xdist workers (which
# inherit this environment) and by the CLI subprocesses some tests start (kill-and-resume runs one
# program three times): an executable compiled once is loaded, not compiled again. Compiled code
# is deterministic, so this changes only the time. Removed at the end of the session.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
  import tempfile  # noqa: E402
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxpapers-test-jit-cache-")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

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


def tiny_glm_args(corpus: Path, workdir: Path, *extra: str) -> list[str]:
  return ["run", "glm/pretrain", "--preset", "tiny", "--workdir", str(workdir),
          f"--config.data.corpus={corpus}", *extra]


sys.modules.setdefault("jp_testutil", sys.modules[__name__])


def pytest_sessionfinish(session):
  if _OWN_CACHE and not hasattr(session.config, "workerinput"):   # the controller (or no xdist)
    import shutil
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
