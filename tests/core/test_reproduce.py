"""`jaxpapers reproduce`'s refusals (its run, dashboard and resume are tested from an installed
wheel in test_install.py, the dashboard in a browser in test_dashboard.py)."""
from jaxpapers import cli


def test_reproduce_refuses_unknown_papers_and_overrides(capsys):
  assert cli.main(["reproduce", "nope"]) == 2
  assert "unknown paper 'nope'" in capsys.readouterr().err
  assert cli.main(["reproduce", "iaad", "--config.seed=1"]) == 2
  assert "no --config" in capsys.readouterr().err
  assert cli.main(["reproduce", "iaad", "--preset", "qiuck"]) == 2
  assert "iaad/sweep has no preset 'qiuck'" in capsys.readouterr().err
  assert cli.main(["reproduce", "iaad", "--workdir", "x"]) == 2
  assert "not --workdir" in capsys.readouterr().err
