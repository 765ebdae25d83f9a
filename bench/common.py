"""Small helpers shared by the benchmark scripts: timing, peak RSS sampling, environment line."""

from __future__ import annotations

import platform
import threading
import time
from contextlib import contextmanager

import torch


def rss_mib() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def peak_rss(result: dict, key: str = "peak_rss_mib", every: float = 0.01):
    """Sample the process RSS while the block runs; store the peak above the starting RSS in `result[key]`."""
    start, peak, stop = rss_mib(), [rss_mib()], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mib())
            time.sleep(every)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        result[key] = peak[0] - start


def environment() -> str:
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"
    return (f"python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"{device}")
