"""Knowledge-tracing files: the DKT three-line layout and ASSISTments-style CSV load; every
malformed row is one error line naming the file and line."""
import numpy as np
import pytest

from jaxpapers.core.errors import DataError
from jaxpapers.mooc import formats


def test_dkt_round_trip(tmp_path):
  p = tmp_path / "kt.csv"
  formats.write_dkt_csv(p, [np.array([7, 3, 7]), np.array([3])], [np.array([1, 0, 1]), np.array([0])])
  d = formats.read_dkt_csv(p)
  assert d.question_names == ["7", "3"] and d.n_questions == 2
  assert [q.tolist() for q in d.questions] == [[0, 1, 0], [1]]
  assert [c.tolist() for c in d.correct] == [[1, 0, 1], [0]]


@pytest.mark.parametrize("text, line, what", [
    ("3\n1,2\n1,0,1\n", 2, "2 question ids where line 1 says 3"),
    ("2\n1,2\n1,0,1\n", 3, "3 correctness values"),
    ("2\n1,x\n1,0\n", 2, "question ids must be comma-separated integers, found 'x'"),
    ("2\n1,2\n1,2\n", 3, "correctness must be 0 or 1, found 2"),
    ("2\n1,2\n", 2, "not a multiple of 3"),
    ("0\n1\n1\n", 1, "one positive answer count"),
])
def test_dkt_malformed(tmp_path, text, line, what):
  p = tmp_path / "bad.csv"
  p.write_text(text)
  with pytest.raises(DataError) as e:
    formats.read_dkt_csv(p)
  msg = str(e.value)
  assert f"{p}:{line}:" in msg and what in msg and "\n" not in msg


def test_assistments_order_and_dropped_rows(tmp_path):
  p = tmp_path / "a.csv"
  p.write_text("order_id,user_id,skill_id,correct,extra\n"
               "5,u1,add,1,x\n2,u1,sub,0,x\n3,u2,add,1,x\n4,u1,,1,x\n1,u2,mul,0,x\n")
  d = formats.read_assistments_csv(p)
  assert d.dropped_rows == 1
  assert d.question_names == ["sub", "add", "mul"]
  assert [q.tolist() for q in d.questions] == [[0, 1], [2, 1]]
  assert [c.tolist() for c in d.correct] == [[0, 1], [0, 1]]
  assert formats.read_kt(p, "assistments").n_questions == 3


@pytest.mark.parametrize("text, where, what", [
    ("user_id,skill_id,correct\nu,s,1\n", ":1:", "missing column(s) order_id"),
    ("order_id,user_id,skill_id,correct\n1,u,s,yes\n", ":2:", "correct must be 0 or 1, found 'yes'"),
    ("order_id,user_id,skill_id,correct\n1,u,s,1\nfirst,u,s,0\n", ":3:", "order_id must be a number"),
    ("order_id,user_id,skill_id,correct\n1,u,s\n", ":2:", "3 fields where the header has 4"),
    ("order_id,user_id,skill_id,correct\n1,,s,1\n", ":2:", "empty user_id"),
])
def test_assistments_malformed(tmp_path, text, where, what):
  p = tmp_path / "bad.csv"
  p.write_text(text)
  with pytest.raises(DataError) as e:
    formats.read_assistments_csv(p)
  assert f"{p}{where}" in str(e.value) and what in str(e.value)


def test_missing_file_and_format(tmp_path):
  with pytest.raises(DataError, match="no such file"):
    formats.read_dkt_csv(tmp_path / "none.csv")
  with pytest.raises(DataError, match="unknown knowledge-tracing format"):
    formats.read_kt(tmp_path / "none.csv", "csv")
