"""MAE-GEBD (He et al. 2022, arXiv 2206.08610): generic event boundary detection, scored by the
Kinetics-GEBD protocol, on a generated multi-annotator benchmark."""
