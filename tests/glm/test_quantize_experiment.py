"""`jaxpapers run glm/quantize --preset tiny`: the results.json keys the issue names."""
import json

from jaxpapers.cli import main


def test_quantize_experiment_writes_the_named_results(small_corpus, tmp_path):
  wd = tmp_path / "q"
  assert main(["run", "glm/quantize", "--preset", "tiny", "--workdir", str(wd),
               f"--config.pretrain.data.corpus={small_corpus}"]) == 0
  r = json.loads((wd / "results.json").read_text())
  assert set(r["ppl"]) == {"fp32", "int8", "int4_absmax", "int4_zeropoint", "int4_group"}
  for key in ("weight_bytes_ratio_int4", "decode_speedup_int4_cpu", "decode_peak_mem_ratio_int4",
              "quantize_peak_rss_ratio"):
    assert isinstance(r[key], float) and r[key] > 0, key
  assert r["weight_bytes_ratio_int4"] <= 0.14
  assert all(r["checkpoint_roundtrip_bitwise"].values())
  assert abs(r["ppl_rel_change"]["int8"]) < 0.01
  assert (wd / "REPORT.md").read_text().count("| int4_") >= 3
  assert (wd / "quantized" / "int4_absmax").is_dir() and (wd / "pretrain" / "results.json").exists()


def test_quantize_experiment_rejects_bad_schemes(tmp_path, capsys):
  code = main(["run", "glm/quantize", "--preset", "tiny", "--workdir", str(tmp_path / "x"),
               "--config.schemes=('int3',)"])
  assert code == 2 and "unknown quantization scheme 'int3'" in capsys.readouterr().err
