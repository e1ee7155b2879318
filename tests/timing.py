"""Test deadlines that scale with the machine: a CI runner whose other core is busy is slower, not broken.

`scaled(s)` stretches a deadline by the 1-minute load per core (at least 1) and by
FNAS_TEST_TIME_SCALE (default 1; set it higher on a known-slow machine). Use it for
every wait a test gives real processes or RPCs; never to shorten one.
"""

from __future__ import annotations

import os


def load_factor() -> float:
    """The 1-minute load average per core, at least 1, times FNAS_TEST_TIME_SCALE."""
    load = os.getloadavg()[0] / (os.cpu_count() or 1)
    return max(1.0, load) * float(os.environ.get("FNAS_TEST_TIME_SCALE", "1"))


def scaled(seconds: float) -> float:
    """`seconds` stretched by `load_factor()`."""
    return seconds * load_factor()
