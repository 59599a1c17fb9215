"""The Kinetics-GEBD protocol on a user's files (jaxpapers/gebd/score.py):
`jaxpapers run gebd/score --workdir DIR --config.gt_file=k400_mr345_val_min_change_duration0.3.pkl
--config.pred_file=preds.pkl`. `strict=False` ignores predictions for videos the annotation file
lacks (as the official script does) instead of failing on them."""
import ml_collections

from jaxpapers.gebd.metric import THRESHOLDS

PRESETS = (None,)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = "gebd/score"
  c.gt_file = ""
  c.pred_file = ""
  c.thresholds = THRESHOLDS
  c.strict = True
  return c
