"""What else used this machine while a benchmark ran (benchmarks run on shared CPUs)."""

from __future__ import annotations

import os


class OtherLoad:
    """CPU share taken from this benchmark by others while a block runs (Linux only).

    Compares all CPUs' busy time (/proc/stat) with this process's own CPU time
    (os.times, all threads): ``others`` is the fraction of the machine used by
    other processes, ``steal`` the fraction the hypervisor gave to other VMs.
    Both are None where /proc/stat is unavailable.
    """

    others: float | None = None
    steal: float | None = None

    @staticmethod
    def _sample():
        with open("/proc/stat") as fh:
            # user nice system idle iowait irq softirq steal (guest time is inside user)
            f = [int(x) for x in fh.readline().split()[1:9]]
        own = os.times()
        return sum(f), f[3] + f[4], f[7], own.user + own.system

    def __enter__(self):
        try:
            self._start = self._sample()
        except (OSError, ValueError, IndexError):
            self._start = None
        return self

    def __exit__(self, *exc):
        if self._start is None:
            return
        total, idle, steal, own = (b - a for a, b in zip(self._start, self._sample()))
        if total <= 0:
            return
        tick = os.sysconf("SC_CLK_TCK")  # /proc/stat counts in ticks, os.times in seconds
        busy = total - idle - steal
        self.others = max(0.0, (busy - own * tick) / total)
        self.steal = steal / total

    def describe(self) -> str:
        if self.others is None:
            return "unknown (no /proc/stat)"
        return f"{100 * self.others:.0f}% (+{100 * self.steal:.0f}% hypervisor steal)"

    def __str__(self) -> str:  # the share of other processes, e.g. "12%"
        return "unknown" if self.others is None else f"{100 * self.others:.0f}%"
