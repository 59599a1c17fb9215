"""Host memory: this process's resident set size, and its peak over a block of code."""
from __future__ import annotations

import os
import threading


def rss_bytes() -> int:
  """Current resident set size (Linux /proc; 0 where unavailable)."""
  try:
    with open("/proc/self/statm") as f:
      return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
  except (OSError, ValueError, IndexError):
    return 0


class PeakRSS:
  """`with PeakRSS() as m: ...` samples RSS every `interval_s` in a thread; afterwards
  `m.start` is the RSS on entry, `m.peak` the highest sample and `m.extra = peak - start`."""

  def __init__(self, interval_s: float = 0.001):
    self.interval_s = interval_s
    self.start = self.peak = 0
    self._stop = threading.Event()

  def _run(self):
    while not self._stop.wait(self.interval_s):
      self.peak = max(self.peak, rss_bytes())

  def __enter__(self):
    self.start = self.peak = rss_bytes()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, rss_bytes())
    return False

  @property
  def extra(self) -> int:
    return self.peak - self.start


def trim_heap() -> None:
  """Hands freed heap pages back to the OS (glibc malloc_trim; nothing elsewhere)."""
  import ctypes
  try:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
  except (OSError, AttributeError):
    pass


def return_freed_memory_to_os(threshold: int = 1 << 20) -> bool:
  """Makes glibc serve every allocation of `threshold` bytes or more with its own mmap, returned
  to the OS when freed. By default glibc raises that threshold to the size of the first large
  block freed (up to 32 MiB), after which an FP layer's buffers and XLA's temporaries come from
  heaps that keep freed pages resident: measured on a 32-layer d_model-1024 GLM (1.65 GB FP32),
  the streaming child peaked at 0.59 of the FP32 bytes by default and 0.46 with this. Process-
  wide, so only the command line (a process of its own) calls it. False where there is no glibc."""
  import ctypes
  try:
    return bool(ctypes.CDLL("libc.so.6").mallopt(-3, threshold))   # -3: M_MMAP_THRESHOLD
  except (OSError, AttributeError):
    return False
