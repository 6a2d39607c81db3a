"""CDF plots (PNG) of every latency figure, one line per system.

matplotlib is an optional extra (``pip install 'scriptvisor[plot]'``); without
it this module says so and the run goes on.
"""

from __future__ import annotations

import os


__all__ = ["LATENCY_FIGURES", "plot_cdfs"]

LATENCY_FIGURES = ("recycle_ms", "overshoot_ms", "next_after_timeout_ms", "warm_overhead_ms")


def plot_cdfs(samples: dict[str, dict[str, list[float]]], out_dir: str) -> tuple[list[str], str | None]:
    """(written PNG paths, note when nothing could be drawn)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "CDF plots skipped: matplotlib is not installed (pip install 'scriptvisor[plot]')."
    written = []
    for figure in LATENCY_FIGURES:
        series: list[tuple[str, list[float]]] = [
            (name, sorted(v for v in figs.get(figure, []) if v > 0))
            for name, figs in samples.items()
        ]
        series = [(n, v) for n, v in series if v]
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, values in series:
            ys = [(i + 1) / len(values) for i in range(len(values))]
            ax.step(values, ys, where="post", label=f"{name} (n={len(values)})")
        ax.set_xscale("log")
        ax.set_xlabel(f"{figure} (log scale)")
        ax.set_ylabel("fraction of samples <= x")
        ax.set_title(f"CDF: {figure}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        path = os.path.join(out_dir, f"cdf_{figure}.png")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written, None


