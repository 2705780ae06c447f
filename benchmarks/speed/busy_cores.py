"""How many cores other processes kept busy while a benchmark ran: the speed benchmarks' noise gauge (Linux)."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path


class ForeignCpu:
    """Average number of cores that other processes kept busy since construction (Linux only)."""

    def __init__(self):
        self.start = (self._busy(), self._own(), time.perf_counter())

    @staticmethod
    def _busy() -> float | None:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait

    @staticmethod
    def _own() -> float:
        self_, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return self_.ru_utime + self_.ru_stime + kids.ru_utime + kids.ru_stime

    def cores(self) -> float | None:
        busy, own, wall = self._busy(), self._own(), time.perf_counter()
        if busy is None or self.start[0] is None:
            return None
        return max(0.0, (busy - self.start[0]) - (own - self.start[1])) / (wall - self.start[2])
