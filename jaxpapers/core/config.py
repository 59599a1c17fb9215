"""Loading `get_config(arg)` files and applying `--config.a.b=value` overrides with validation."""
from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path
from typing import Any, Callable

import ml_collections

from jaxpapers.core.errors import ConfigError


def load_config_file(path: str | Path, arg: str | None = None) -> ml_collections.ConfigDict:
  """Imports `path` and returns `get_config(arg)`."""
  path = Path(path)
  if not path.is_file():
    raise ConfigError(f"config file not found: {path}")
  spec = importlib.util.spec_from_file_location(f"_jaxpapers_cfg_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # noqa: BLE001 - the user's file: any failure is one line
    raise ConfigError(f"config file {path} fails to import: {_where(e, path)}") from None
  if not hasattr(module, "get_config"):
    raise ConfigError(f"{path} defines no get_config(arg)")
  presets = getattr(module, "PRESETS", None)
  if presets is not None and arg not in presets:
    raise ConfigError(f"unknown preset {arg!r} for {path.name}; choose one of {list(presets)}")
  try:
    cfg = module.get_config(arg)
  except Exception as e:  # noqa: BLE001
    raise ConfigError(f"{path}: get_config({arg!r}) raised {_where(e, path)}") from None
  if not isinstance(cfg, ml_collections.ConfigDict):
    raise ConfigError(f"{path}: get_config must return an ml_collections.ConfigDict")
  return cfg


def _where(e: Exception, path: Path) -> str:
  """'SyntaxError at line 3: invalid syntax': the exception and the line of `path` it came from."""
  line = getattr(e, "lineno", None) if isinstance(e, SyntaxError) else None
  if line is None:
    tb = e.__traceback__
    while tb is not None:
      if Path(tb.tb_frame.f_code.co_filename) == path:
        line = tb.tb_lineno
      tb = tb.tb_next
  msg = (e.msg if isinstance(e, SyntaxError) else " ".join(str(e).split()))[:200]
  return f"{type(e).__name__}{f' at line {line}' if line else ''}: {msg}"


def _parse_value(text: str, current: Any, key: str) -> Any:
  """Parses `text` into the type of the current value (bool/int/float/str/tuple/None)."""
  if isinstance(current, bool):
    if text.lower() in ("true", "1", "yes"):
      return True
    if text.lower() in ("false", "0", "no"):
      return False
    raise ConfigError(f"--config.{key} must be a bool, got {text!r}")
  if isinstance(current, int):
    try:
      return int(text)
    except ValueError:
      raise ConfigError(f"--config.{key} must be an int, got {text!r}") from None
  if isinstance(current, float):
    try:
      return float(text)
    except ValueError:
      raise ConfigError(f"--config.{key} must be a float, got {text!r}") from None
  if isinstance(current, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    if current is None:
      return text
    raise ConfigError(f"--config.{key}: cannot parse {text!r} as {type(current).__name__}") from None
  if isinstance(current, (tuple, list)) and not isinstance(value, (tuple, list)):
    raise ConfigError(f"--config.{key} must be a {type(current).__name__}, got {text!r}")
  if isinstance(current, tuple):
    value = tuple(value)
  return value


# keys a train section (one with `inject_nan_step`) may take on the command line without its
# config file naming them, with these defaults (core.train reads them with .get): the fault
# injector's other settings and the cap on consecutive skipped steps
TRAIN_OPTIONAL = {"inject_nan_into": "loss", "inject_value": "nan", "inject_nan_count": 1,
                  "max_consecutive_skips": 5}


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: dict[str, str]) -> None:
  """Applies {"a.b": "value"} overrides in place; unknown keys and bad types raise ConfigError."""
  for key, text in overrides.items():
    node = cfg
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        raise ConfigError(f"unknown config key --config.{'.'.join(parts[:i + 1])}")
      node = node[part]
    leaf = parts[-1]
    if (isinstance(node, ml_collections.ConfigDict) and leaf not in node
        and leaf in TRAIN_OPTIONAL and "inject_nan_step" in node):
      node[leaf] = TRAIN_OPTIONAL[leaf]
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
      raise ConfigError(f"unknown config key --config.{key}")
    if isinstance(node[leaf], ml_collections.ConfigDict):
      raise ConfigError(f"--config.{key} is a section; set one of its keys: {sorted(node[leaf].keys())}")
    value = _parse_value(text, node[leaf], key)
    try:
      node[leaf] = value
    except TypeError as e:
      raise ConfigError(f"--config.{key}: {e}") from None


def check(cfg: ml_collections.ConfigDict, key: str, predicate: Callable[[Any], bool], what: str) -> None:
  """Raises ConfigError naming `key` unless predicate(value) holds."""
  node = cfg
  for part in key.split("."):
    node = node[part]
  ok = False
  try:
    ok = bool(predicate(node))
  except Exception:  # a value of the wrong type fails the predicate
    ok = False
  if not ok:
    raise ConfigError(f"--config.{key} must be {what}, got {node!r}")


def with_defaults(what: str, defaults: dict, cfg: dict | None, positive_ints=()) -> dict:
  """`defaults` updated with `cfg` (a component's config dict): an unknown key, or a key of
  `positive_ints` that is not a positive int, is one ConfigError naming `what` config and key."""
  c = dict(defaults)
  unknown = sorted(set(cfg or {}) - set(c))
  if unknown:
    raise ConfigError(f"unknown {what} config key(s) {', '.join(unknown)}; known: {', '.join(c)}")
  c.update(cfg or {})
  for k in positive_ints:
    if not isinstance(c[k], int) or isinstance(c[k], bool) or c[k] < 1:
      raise ConfigError(f"{what} config {k} must be a positive int, got {c[k]!r}")
  return c


def to_json(cfg: ml_collections.ConfigDict) -> str:
  return json.dumps(cfg.to_dict(), indent=2, sort_keys=True, default=str)


def differing_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
  """Dotted keys whose values differ between two nested dicts."""
  out = []
  for k in sorted(set(a) | set(b)):
    va, vb = a.get(k), b.get(k)
    if isinstance(va, dict) and isinstance(vb, dict):
      out += differing_keys(va, vb, f"{prefix}{k}.")
    elif (list(va) if isinstance(va, (list, tuple)) else va) != (list(vb) if isinstance(vb, (list, tuple)) else vb):
      out.append(prefix + k)
  return out
