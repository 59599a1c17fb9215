"""How much freshly initialised deep prompts change the pretrained retriever before any training:
nDCG@10 of MiniLM with untrained P-tuning v2 prompts (the `pt` mode at step 0) beside the encoder
as shipped, on seed 0's collections of a `retrieval/transfer` config.

  python experiments/retrieval/prompt_init.py [preset]
"""
import sys

from jaxpapers.core.config import load_config_file
from jaxpapers.nn import minilm
from jaxpapers.registry import configs_root
from jaxpapers.retrieval import experiments as ex


def main(preset: str | None = None) -> None:
  c = load_config_file(configs_root() / "retrieval/transfer.py", preset)
  cols = ex.collections_of(c.seed, c, minilm.Tokenizer(), {})
  encoder = ex.Encoder(c.eval.batch, progress=False)
  for mode in ("zeroshot", "pt"):
    model = ex.retriever(c, c.seed, mode)          # pt: prompts as initialised, not trained
    rank = ex.dense_ranker(model, encoder, c.eval.k, None)
    scores = {s: ex.evaluate(rank, cols[s], c, None, "")["ndcg10"] for s in ex.eval_settings(cols)}
    print(f"{'pt at step 0' if mode == 'pt' else mode:>13}: " +
          "  ".join(f"{s} {100 * v:.1f}" for s, v in scores.items()), flush=True)


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else None)
