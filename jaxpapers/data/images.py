"""Embedded image data: a Fashion-MNIST subset (8,000 train / 2,000 test, 28x28 grey)."""
from __future__ import annotations

import io
from importlib import resources

import numpy as np


def load_fashion_mnist() -> dict[str, np.ndarray]:
  """{train_x, train_y, test_x, test_y}; images float32 NHWC in [0, 1], labels int32 (10 classes)."""
  raw = resources.files("jaxpapers.data").joinpath("assets", "fashion_mnist_small.npz").read_bytes()
  d = np.load(io.BytesIO(raw))
  x = lambda a: (a.astype(np.float32) / 255.0)[..., None]
  return {"train_x": x(d["train_x"]), "train_y": d["train_y"].astype(np.int32),
          "test_x": x(d["test_x"]), "test_y": d["test_y"].astype(np.int32)}
