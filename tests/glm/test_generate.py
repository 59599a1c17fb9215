"""Generation from Python and from the CLI, on a tiny trained run."""
import numpy as np
from flax import nnx

from jaxpapers import cli
from jaxpapers.glm.generate import complete, generate_blank
from jaxpapers.glm.model import GLM, GLMConfig
from jaxpapers.glm.objective import SpecialIds
from jp_testutil import tiny_glm_args

IDS = SpecialIds(pad=0, mask=1, gmask=2, sop=3, eop=4)


def test_greedy_blank_generation_is_deterministic_and_sampling_uses_the_seed():
  model = GLM(GLMConfig(vocab_size=40, num_layers=2, d_model=16, num_heads=2, dropout=0.0),
              rngs=nnx.Rngs(params=0))
  ctx = [7, 8, IDS.mask, 9, 10]
  a = generate_blank(model, ctx, 2, IDS, max_new_tokens=6)
  b = generate_blank(model, ctx, 2, IDS, max_new_tokens=6)
  assert a == b and len(a) <= 6 and IDS.eop not in a
  s1 = generate_blank(model, ctx, 2, IDS, max_new_tokens=6, strategy="sample", seed=1)
  s2 = generate_blank(model, ctx, 2, IDS, max_new_tokens=6, strategy="sample", seed=1)
  assert s1 == s2


def test_cli_generate_after_a_run(capsys, tmp_path, small_corpus):
  wd = tmp_path / "wd"
  assert cli.main(tiny_glm_args(small_corpus, wd)) == 0
  capsys.readouterr()
  assert cli.main(["generate", "--workdir", str(wd), "--prompt", "Emma was [MASK] happy.",
                   "--max_new_tokens", "3"]) == 0
  out = capsys.readouterr().out.strip()
  assert out.startswith("Emma was") and out.endswith("happy.") and "[MASK]" not in out
  assert cli.main(["generate", "--workdir", str(wd), "--prompt", "It is a truth",
                   "--strategy", "top_p", "--max_new_tokens", "3"]) == 0
  assert cli.main(["generate", "--workdir", str(wd), "--prompt", "x", "--strategy", "beam"]) == 2
  assert "unknown sampling strategy" in capsys.readouterr().err
