"""Benchmark harness: scriptvisor side by side with its peers, in one run.

The harness (``bench.recycle``) starts one *driver* subprocess per system
(``bench.driver``), then asks the drivers for one sample at a time, round
robin, so every system is measured under the same machine conditions.  Each
driver hosts exactly one system and times samples itself with
``time.perf_counter``; the harness only schedules, collects and reports.

Peers (pebble, billiard) are optional extras (``pip install .[bench]``);
a missing one is skipped with a printed reason.  See ``bench/README.md``.
"""

__all__: list[str] = []
