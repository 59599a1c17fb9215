"""Multi-process runs through `jax.distributed` (flags or JAXPAPERS_* environment variables)."""
from __future__ import annotations

import os

import jax

_initialized = False


def maybe_initialize(coordinator: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None) -> bool:
  """Initialises jax.distributed when a coordinator is given (CPU collectives through gloo)."""
  global _initialized
  coordinator = coordinator or os.environ.get("JAXPAPERS_COORDINATOR")
  if not coordinator or _initialized:
    return _initialized
  num_processes = int(num_processes if num_processes is not None else os.environ["JAXPAPERS_NUM_PROCESSES"])
  process_id = int(process_id if process_id is not None else os.environ["JAXPAPERS_PROCESS_ID"])
  # must precede any backend use; affects only the CPU client
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                             process_id=process_id)
  # the first collective sets up gloo's context, which times out after 30 s if a process is late:
  # do it now, while every process is here (initialize returns once all have registered), not at
  # the first barrier of an experiment, which one process may reach long after the others
  from jax.experimental import multihost_utils
  multihost_utils.sync_global_devices("jaxpapers_start")
  _initialized = True
  return True
