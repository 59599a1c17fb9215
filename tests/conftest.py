"""8 fake CPU devices, set before jax is imported, so sharding is tested for real."""
import os
import sys
from pathlib import Path

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

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
