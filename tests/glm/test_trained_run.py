"""On one tiny trained GLM: `jaxpapers run glm/quantize --preset tiny` (which trains the GLM in
<workdir>/pretrain first, the path of the quick preset) and `jaxpapers generate` on that run."""
import json

import pytest

from jaxpapers import cli


@pytest.fixture(scope="module")
def quantize_run(tmp_path_factory, small_corpus):
  wd = tmp_path_factory.mktemp("quantize") / "q"
  assert cli.main(["run", "glm/quantize", "--preset", "tiny", "--workdir", str(wd),
                   f"--config.pretrain.data.corpus={small_corpus}"]) == 0
  return wd


def test_quantize_experiment_writes_the_named_results(quantize_run):
  wd = quantize_run
  r = json.loads((wd / "results.json").read_text())
  assert set(r["ppl"]) == {"fp32", "int8", "int4_absmax", "int4_zeropoint", "int4_group"}
  for key in ("weight_bytes_ratio_int4", "decode_speedup_int4_cpu", "decode_speedup_int8_cpu",
              "decode_fp32_bandwidth_fraction", "decode_peak_mem_ratio_int4",
              "quantize_peak_rss_ratio"):
    assert isinstance(r[key], float) and r[key] > 0, key
  # streamed from the FP checkpoint in a child process, bitwise the in-memory quantization
  assert r["quantize_stream_equals_in_memory"] and r["quantize_stream_layers_per_read"] == 1
  assert r["quantize_peak_rss_bytes"] > r["quantize_baseline_rss_bytes"] > 0
  assert r["weight_bytes_ratio_int4"] <= 0.14
  assert all(r["checkpoint_roundtrip_bitwise"].values())
  assert abs(r["ppl_rel_change"]["int8"]) < 0.01
  assert (wd / "REPORT.md").read_text().count("| int4_") >= 3
  assert (wd / "quantized" / "int4_absmax").is_dir() and (wd / "pretrain" / "results.json").exists()


def test_pretrain_results_and_their_definitions(quantize_run):
  """glm/pretrain's results.json (the run inside the quantize run): the named metrics, each
  defined in REPORT.md, the matmul peak with its spread, and the decode speed."""
  wd = quantize_run / "pretrain"
  r = json.loads((wd / "results.json").read_text())
  for key in ("final_loss", "val_loss", "val_ppl", "val_eop_loss", "blank_infill_acc",
              "tokens_per_s", "mfu_cpu", "matmul_flops_per_s", "decode_tokens_per_s"):
    assert isinstance(r[key], float) and r[key] == r[key], key
  lo, hi = r["matmul_flops_per_s_spread"]
  assert 0 < lo <= hi == r["matmul_flops_per_s"]
  assert r["decode_tokens_per_s"] > 0 and r["mfu_cpu"] > 0
  assert all(0 < x < 10 for x in r["mfu_cpu_spread"])     # finite: no empty step-time list
  report = (wd / "REPORT.md").read_text()
  assert "How each metric is defined" in report
  for key in ("final_loss", "val_ppl", "val_eop_loss", "mfu_cpu", "mfu_cpu_spread",
              "decode_tokens_per_s"):
    assert f"`{key}`" in report, key


def test_cli_generate_after_a_run(capsys, quantize_run):
  wd = quantize_run / "pretrain"   # a finished glm/pretrain run
  assert cli.main(["generate", "--workdir", str(wd), "--prompt", "Emma was [MASK] happy.",
                   "--max_new_tokens", "3"]) == 0
  out = capsys.readouterr().out.strip()
  assert out.startswith("Emma was") and out.endswith("happy.") and "[MASK]" not in out
  assert cli.main(["generate", "--workdir", str(wd), "--prompt", "It is a truth",
                   "--strategy", "top_p", "--max_new_tokens", "3"]) == 0
  assert cli.main(["generate", "--workdir", str(wd), "--prompt", "x", "--strategy", "beam"]) == 2
  assert "unknown sampling strategy" in capsys.readouterr().err


def test_quantize_experiment_rejects_bad_schemes(tmp_path, capsys):
  code = cli.main(["run", "glm/quantize", "--preset", "tiny", "--workdir", str(tmp_path / "x"),
               "--config.schemes=('int3',)"])
  assert code == 2 and "unknown quantization scheme 'int3'" in capsys.readouterr().err
