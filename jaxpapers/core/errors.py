"""User-facing errors: the CLI prints their one line and exits with code 2."""


class JaxpapersError(Exception):
  """Base class of every error caused by user input (configs, data, workdirs, checkpoints)."""


class ConfigError(JaxpapersError):
  """A config key or value is wrong."""


class DataError(JaxpapersError):
  """Input data is missing or malformed."""


class WorkdirError(JaxpapersError):
  """The workdir cannot be used."""


class CheckpointError(JaxpapersError):
  """No usable checkpoint, or a checkpoint that does not fit the model."""


class NonFiniteError(JaxpapersError):
  """Training produced a NaN/Inf and the config says to stop."""
