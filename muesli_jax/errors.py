"""The errors a run reports as one line (`scripts/train.py` prints them as
`error: ...`), rather than as a traceback."""


class ConfigError(ValueError):
  """A config value, override or file that cannot be used."""


class UnknownEnvError(ValueError):
  """An env id, observation or action space this agent cannot use."""


class CheckpointError(ValueError):
  """A checkpoint that is missing, unreadable or from another config."""


class NonFiniteLossError(RuntimeError):
  """The loss became NaN or infinite: the run stops, keeping its last
  checkpoint."""
