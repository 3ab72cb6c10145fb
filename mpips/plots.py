"""The report's figures, drawn with matplotlib's Agg canvas (no display, no pyplot
state): one function per figure, each returning None when no run has what it shows."""
from __future__ import annotations

import io
from typing import Callable, Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .runlog import Run

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b",
          "#e377c2")


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _figure(width: float = 7.5, height: float = 4.0) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _steps_axis(ax, runs: Sequence[Run]) -> None:
    """A top axis in steps when one run is drawn and its final record tells steps."""
    rate = runs[0].steps_per_sample() if len(runs) == 1 else None
    if rate:
        top = ax.secondary_xaxis("top", functions=(lambda s: s * rate, lambda t: t / rate))
        top.set_xlabel("steps (of the busiest worker)")


def loss(runs: Sequence[Run]) -> Optional[Figure]:
    """Training loss over each progress interval, against samples trained."""
    series = [(r, *r.series("loss")) for r in runs]
    if not any(x.size for _, x, _ in series):
        return None
    fig = _figure()
    ax = fig.add_subplot()
    for i, (run, x, y) in enumerate(series):
        ax.plot(x, y, marker=".", color=COLORS[i % len(COLORS)], label=run.name)
    ax.set(xlabel="samples trained", ylabel="training log-loss (interval mean)",
           title="Training loss")
    _steps_axis(ax, runs)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def auc(runs: Sequence[Run], scored: dict[str, list[tuple[int, float]]]) -> Optional[Figure]:
    """Validation AUC (progress records' ``val_auc``), test AUC of checkpoints (``scored``:
    run name -> (samples, AUC)) and the final test AUC, against samples trained."""
    fig = _figure()
    ax = fig.add_subplot()
    drawn = False
    for i, run in enumerate(runs):
        color = COLORS[i % len(COLORS)]
        x, y = run.series("val_auc")
        if x.size:
            ax.plot(x, y, marker=".", color=color, label=f"{run.name}: validation")
            drawn = True
        if scored.get(run.name):
            sx, sy = zip(*scored[run.name])
            ax.plot(sx, sy, marker="s", ls="--", color=color,
                    label=f"{run.name}: test, at checkpoints")
            drawn = True
        final = run.final or {}
        if isinstance(final.get("auc"), float):
            ax.plot([final["samples"]], [final["auc"]], marker="*", ms=14, ls="none",
                    color=color, label=f"{run.name}: test {final['auc']:.4f}")
            drawn = True
        if isinstance(final.get("oracle_auc"), float):
            ax.axhline(final["oracle_auc"], color=color, ls=":", lw=1,
                       label=f"{run.name}: best achievable {final['oracle_auc']:.4f}")
    if not drawn:
        return None
    ax.set(xlabel="samples trained", ylabel="AUC", title="Validation and test AUC")
    _steps_axis(ax, runs)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def throughput(runs: Sequence[Run]) -> Optional[Figure]:
    """Samples/s over each progress interval against time, and each run's mean."""
    series = [(r, *r.interval_rates()) for r in runs]
    if not any(t.size for _, t, _ in series) and not any(r.final for r in runs):
        return None
    fig = _figure()
    ax = fig.add_subplot()
    for i, (run, t, rate) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        if t.size:
            ax.plot(t, rate, marker=".", color=color, label=f"{run.name}: per interval")
        final = run.final or {}
        mean, seconds = final.get("samples_per_s"), final.get("seconds")
        if isinstance(mean, float):
            end = max(seconds or 0.0, t[-1] if t.size else 0.0) or 1.0
            ax.hlines(mean, 0.0, end, colors=color, linestyles="--", lw=1,
                      label=f"{run.name}: whole run {mean:,.0f}")
    ax.set(xlabel="seconds of training", ylabel="samples/s", title="Throughput")
    ax.set_ylim(bottom=0)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def staleness(run: Run) -> Optional[Figure]:
    """Per table, how many updates a shard update's rows had missed (a histogram)."""
    tables = (run.final or {}).get("staleness")
    if not isinstance(tables, dict) or not tables:
        return None
    names = sorted(tables)
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig = _figure(3.2 * cols, 2.6 * rows)
    for k, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, k + 1)
        hist = np.asarray(tables[name].get("hist", []), dtype=np.float64)
        used = np.flatnonzero(hist)
        top = int(used[-1]) + 1 if used.size else 1
        ax.bar(np.arange(top), hist[:top], color=COLORS[0])
        if hist[:top].max(initial=0) > 0:
            ax.set_yscale("log")
        ax.set_xlim(-0.6, max(top, 4) - 0.4)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{name}: mean {tables[name].get('mean', 0):.2f}", fontsize="medium")
        ax.set_xlabel("updates missed")
    fig.suptitle(f"{run.name}: staleness per table ({run.final.get('pacing', '?')})")
    return fig


def workers(run: Run) -> Optional[Figure]:
    """Samples and steps of each worker (the final record): how the work was shared."""
    final = run.final or {}
    samples, steps = final.get("worker_samples"), final.get("worker_steps")
    if not samples:
        return None
    fig = _figure(7.5, 3.2)
    for k, (values, label) in enumerate(((samples, "samples"), (steps or [], "steps"))):
        ax = fig.add_subplot(1, 2, k + 1)
        ax.bar(np.arange(len(values)), values, color=COLORS[k])
        ax.set(xlabel="worker", ylabel=label, title=f"{label} per worker")
        ax.set_xticks(np.arange(len(values)))
    fig.suptitle(f"{run.name}: work per worker")
    return fig


def server_load(run: Run) -> Optional[Figure]:
    """Per server: busy share and rows served per step over time (progress records),
    and the busy share of the whole run (final record). None for runs that lack them."""
    panels: list[Callable] = []
    for key, label in (("server_busy", "busy share"), ("server_rows", "rows served / step")):
        t, vals = run.per_server(key)
        if t.size:
            panels.append(lambda ax, t=t, vals=vals, label=label: _per_server_lines(
                ax, t, vals, label))
    busy = (run.final or {}).get("server_busy")
    if isinstance(busy, list) and busy:
        panels.append(lambda ax: _per_server_bars(ax, busy))
    if not panels:
        return None
    fig = _figure(3.6 * len(panels), 3.2)
    for k, draw in enumerate(panels):
        draw(fig.add_subplot(1, len(panels), k + 1))
    fig.suptitle(f"{run.name}: load per server")
    return fig


def _per_server_lines(ax, t: np.ndarray, vals: np.ndarray, label: str) -> None:
    for s in range(vals.shape[1]):
        ax.plot(t, vals[:, s], marker=".", color=COLORS[s % len(COLORS)], label=f"server {s}")
    ax.set(xlabel="seconds of training", ylabel=label, title=label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def _per_server_bars(ax, busy: list) -> None:
    ax.bar(np.arange(len(busy)), [b or 0.0 for b in busy], color=COLORS[2])
    ax.set(xlabel="server", ylabel="busy share", title="busy share, whole run")
    ax.set_xticks(np.arange(len(busy)))
