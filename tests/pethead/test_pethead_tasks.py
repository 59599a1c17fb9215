"""Task files: the shipped suite, a user's JSONL, bad lines as one clear error, per-seed splits."""
import json

import numpy as np
import pytest

from jaxpapers.core.errors import DataError
from jaxpapers.pethead import tasks
from jaxpapers.pethead.experiments import macro_f1


def _write(path, rows):
  path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
  return path


def test_shipped_tasks_load_with_their_label_sets():
  sizes = {"polarity": (200, 2), "wic": (1200, 2), "lexname": (1799, 45), "drugs": (978, 3)}
  for name, (n, k) in sizes.items():
    t = tasks.builtin(name)
    assert (len(t.y), t.num_classes) == (n, k), name
  assert tasks.builtin("wic").pairs is not None and tasks.builtin("polarity").pairs is None


@pytest.mark.parametrize("rows,message", [
    ([{"text": "good", "label": "pos"}, {"text": "bad", "label": "meh"}], r"f.jsonl:2: unknown label 'meh'"),
    ([{"text": "good", "label": "pos"}, {"text": "  ", "label": "neg"}], r"f.jsonl:2: empty text"),
    ([{"text": "good", "label": "pos"}, "{not json"], r"f.jsonl:2: not a JSON object"),
    ([{"text": "good"}], r"f.jsonl:1: no 'label' field"),
    ([{"text": "a", "text_pair": "b", "label": "pos"}, {"text": "c", "label": "neg"}],
     r"f.jsonl:2: no text_pair, unlike the lines before it"),
])
def test_bad_task_lines_are_one_error_naming_file_and_line(tmp_path, rows, message):
  with pytest.raises(DataError, match=message):
    tasks.from_file(_write(tmp_path / "f.jsonl", rows), labels=["pos", "neg"])


def test_user_file_labels_and_long_texts_are_truncated_and_counted(tmp_path):
  from jaxpapers.nn import minilm
  rows = [{"text": "word " * 400, "label": "pos"}, {"text": "short", "label": "neg"}]
  t = tasks.from_file(_write(tmp_path / "mine.jsonl", rows))
  assert t.labels == ("neg", "pos") and t.name == "mine"
  e = minilm.Tokenizer()(t.texts, length=32)
  assert e.truncated == 1 and e.mask[0].sum() == 32 and e.ids[0, 31] == 102   # ends in [SEP]


def test_splits_are_disjoint_stratified_and_a_function_of_the_seed():
  t = tasks.builtin("drugs")
  a, b, c = (tasks.split(t, s, 300, 100, 200) for s in (0, 0, 1))
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert not np.array_equal(np.sort(a["test"]), np.sort(c["test"]))
  allidx = np.concatenate(list(a.values()))
  assert len(allidx) == len(set(allidx)) and abs(len(a["train"]) - 300) <= 3
  share = np.bincount(t.y) / len(t.y)
  for k in a:
    got = np.bincount(t.y[a[k]], minlength=3) / len(a[k])
    np.testing.assert_allclose(got, share, atol=0.02)
  small = tasks.split(tasks.builtin("polarity"), 0, 400, 100, 200)   # 200 examples: proportional
  assert sum(len(v) for v in small.values()) == 200 and len(small["dev"]) == 28


def test_macro_f1_on_a_hand_case():
  y = np.array([0, 0, 1, 1, 2])
  p = np.array([0, 1, 1, 1, 0])
  # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp1 fn0 -> 0.8; class 2: tp0 fn1 -> 0
  assert macro_f1(y, p, 3) == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_shipped_tasks_hold_each_text_once():
  """Copies of one text (many man pages share a DESCRIPTION) would sit in train and test alike."""
  for name in tasks.BUILTIN:
    t = tasks.builtin(name)
    keys = list(zip(t.texts, t.pairs or [None] * len(t.texts)))
    assert len(set(keys)) == len(keys), name
