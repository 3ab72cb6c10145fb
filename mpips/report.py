"""``mpips report``: runs' metrics as PNG plots and one self-contained HTML page.

``DIR/index.html`` holds every plot as an embedded image (each also written beside it as
a PNG file), a summary table of settings and results with one column per run, and a
list of the plots left out because the metrics lack what they show. Plotting needs
matplotlib (the ``report`` extra, which ``make`` installs).
"""
from __future__ import annotations

import base64
import html
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from .durable import atomic_write
from .errors import ConfigError
from .metrics import auc
from .runlog import Run, read_run

# Rows of the summary table: (final record key, label, how to show it).
RESULTS = [("model", "model", "text"), ("optimizer", "optimizer", "text"),
           ("pacing", "pacing", "text"), ("balance", "balanced", "text"),
           ("servers", "servers", "int"), ("workers", "workers", "int"),
           ("epochs", "epochs", "int"), ("samples", "samples trained", "int"),
           ("seconds", "seconds", "float2"), ("samples_per_s", "samples/s", "int"),
           ("train_loss", "training log-loss", "float4"), ("auc", "test AUC", "float4"),
           ("logloss", "test log-loss", "float4"), ("test_rows", "test rows", "int"),
           ("oracle_auc", "best achievable AUC", "float4"),
           ("staleness_mean", "staleness mean", "float2"),
           ("staleness_max", "staleness max", "int"), ("ssp_violations", "SSP violations", "int"),
           ("shard_updates", "shard updates", "int"),
           ("server_busy", "server busy share", "list"),
           ("partition_moves", "partition moves", "int"), ("moved_rows", "rows moved", "int"),
           ("map_epoch", "partition map epoch", "int"),
           ("standby_joined", "standby servers joined", "int"),
           ("server_table_bytes", "server table bytes", "bytes"),
           ("server_peak_rss_bytes", "server peak resident", "bytes"),
           ("bad_lines_skipped", "bad lines skipped", "int"),
           ("resumed_from_step", "resumed from step", "int"),
           ("failures_survived", "failures survived (ULFM)", "int"),
           ("rows_reloaded", "rows reloaded after failures", "int"),
           ("checkpoint", "last checkpoint", "text")]
# Settings shown from the run's newest checkpoint manifest, where there is one.
SETTINGS = ("data", "test", "format", "batch_size", "lr", "l2", "table_rows",
            "embedding_dim", "hidden", "sync", "staleness", "seed", "shuffle")


@dataclass
class Plot:
    """One figure of the page: its file, heading, caption, and why it is left out when
    the metrics lack what it shows (``png`` None)."""

    file: str
    heading: str
    caption: str
    png: Optional[bytes]
    missing: str = ""


def report(paths: Sequence[str], out: str, title: Optional[str] = None,
           score_checkpoints: bool = False) -> Path:
    """Read the runs, draw every plot they have data for, write the PNGs and then
    ``index.html`` (each atomically); returns the page's path."""
    try:
        from . import plots
    except ImportError:
        raise ConfigError("mpips report needs matplotlib: pip install 'mpips[report]' (make "
                          "installs it)") from None
    runs = unique_names([read_run(p) for p in paths])
    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot create the folder ({exc})") from None
    scored = {r.name: checkpoint_auc(r) for r in runs} if score_checkpoints else {}
    figures = [Plot("loss.png", "Training loss", "Mean log-loss of the samples trained in "
                    "each progress interval.", _png(plots.loss(runs)), "no progress "
                    "records (a run shorter than --progress-seconds writes none)"),
               Plot("auc.png", "Validation and test AUC", "Validation AUC where the "
                    "progress records carry it (val_auc), test AUC of each checkpoint "
                    "(with --score-checkpoints), the final test AUC (star) and the best "
                    "achievable AUC of the built-in data.", _png(plots.auc(runs, scored)),
                    "no val_auc, no final record, no checkpoint scored"),
               Plot("throughput.png", "Throughput", "Samples/s between progress records, "
                    "and over the whole run.", _png(plots.throughput(runs)),
                    "no progress and no final record")]
    for run in runs:
        slug = _slug(run.name)
        figures += [
            Plot(f"staleness-{slug}.png", f"Staleness: {run.name}", "Per table, how many "
                 "updates the rows of each shard update had missed (0 under BSP).",
                 _png(plots.staleness(run)), "no final record with staleness"),
            Plot(f"workers-{slug}.png", f"Work per worker: {run.name}", "Samples and steps "
                 "each worker trained.", _png(plots.workers(run)),
                 "no final record with worker_samples"),
            Plot(f"servers-{slug}.png", f"Load per server: {run.name}", "Busy share and "
                 "rows served per step of each server.", _png(plots.server_load(run)),
                 "these metrics carry no server_busy or server_rows (written by an mpips "
                 "that does not measure per-server load)")]
    for fig in figures:
        if fig.png is not None:
            atomic_write(folder / fig.file, fig.png)
    page = folder / "index.html"
    atomic_write(page, page_html(title or ", ".join(r.name for r in runs), runs, figures,
                                 scored).encode())
    drawn = sum(f.png is not None for f in figures)
    print(f"[mpips] report: {drawn} plot(s) of {len(runs)} run(s) -> {page}", flush=True)
    return page


def checkpoint_auc(run: Run) -> list[tuple[int, float]]:
    """(samples, test AUC) of each of the run's checkpoints, scored on its training
    job's test rows in this process."""
    from .export import Model
    from .predict import own_test_scores

    out = []
    for point in run.checkpoints:
        probs, labels = own_test_scores(Model.from_checkpoint(point.path))
        out.append((point.samples, auc(labels, probs)))
    return out


def unique_names(runs: list[Run]) -> list[Run]:
    """Runs named by their file, with the folder added where two files share a name."""
    stems = [r.name for r in runs]
    for r in runs:
        if stems.count(r.name) > 1:
            r.name = f"{r.path.parent.name}/{r.path.stem}"
    return runs


def _png(fig: object) -> Optional[bytes]:
    from .plots import png

    return None if fig is None else png(fig)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"


def show(value: object, how: str) -> str:
    """A summary cell's text."""
    if value is None:
        return "–"
    if how == "int" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:,.0f}"
    if how.startswith("float") and isinstance(value, (int, float)):
        return f"{value:,.{how[-1]}f}"
    if how == "bytes" and isinstance(value, (int, float)):
        return f"{value / 2**20:,.1f} MiB"
    if how == "list" and isinstance(value, list):
        return ", ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def summary_rows(runs: Sequence[Run]) -> list[tuple[str, list[str]]]:
    """(label, one cell per run) for every result or setting some run has."""
    rows = []
    for key, label, how in RESULTS:
        cells = [(r.final or {}).get(key) for r in runs]
        if any(c is not None for c in cells):
            rows.append((label, [show(c, how) for c in cells]))
    for key in SETTINGS:
        cells = [r.settings.get(key) for r in runs]
        if any(c is not None for c in cells):
            rows.append((key.replace("_", "-"), [show(c, "text") for c in cells]))
    rows.append(("progress records", [str(len(r.progress)) for r in runs]))
    rows.append(("checkpoints kept", [str(len(r.checkpoints)) for r in runs]))
    return rows


STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}
figure{margin:1.5em 0}img{max-width:100%;border:1px solid #ddd}figcaption{color:#555}"""


def page_html(title: str, runs: Sequence[Run], figures: Sequence[Plot],
              scored: dict[str, list[tuple[int, float]]]) -> str:
    """The page: summary table, every plot drawn (embedded, linked to its file), and
    what was left out and why."""
    esc = html.escape
    head = "".join(f"<th>{esc(r.name)}</th>" for r in runs)
    body = "".join(f"<tr><td>{esc(label)}</td>" + "".join(f"<td>{esc(c)}</td>" for c in cells)
                   + "</tr>\n" for label, cells in summary_rows(runs))
    parts = [f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{esc(title)}</h1>",
             f"<p>mpips report of {', '.join(esc(str(r.path)) for r in runs)}, written "
             f"{esc(time.strftime('%Y-%m-%d %H:%M:%S'))}.</p>",
             f"<h2>Summary</h2><table><tr><th></th>{head}</tr>\n{body}</table>"]
    for fig in figures:
        if fig.png is None:
            continue
        data = base64.b64encode(fig.png).decode()
        parts.append(f"<figure id=\"{esc(fig.file)}\"><h2>{esc(fig.heading)}</h2>"
                     f"<a href=\"{esc(fig.file)}\"><img src=\"data:image/png;base64,{data}\" "
                     f"alt=\"{esc(fig.heading)}\"></a><figcaption>{esc(fig.caption)}"
                     f"</figcaption></figure>")
    left = [f for f in figures if f.png is None]
    if left:
        parts.append("<h2>Not drawn</h2><ul>" + "".join(
            f"<li>{esc(f.heading)}: {esc(f.missing)}</li>"
            for f in left) + "</ul>")
    if scored:
        parts.append("<p>Test AUC at checkpoints: " + "; ".join(
            f"{esc(name)} " + ", ".join(f"{a:.4f}" for _, a in pts)
            for name, pts in scored.items()) + ".</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
