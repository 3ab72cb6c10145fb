"""``mpips report``: every plot of a BSP and an ASP run (the per-server load included),
the per-server plots left out when older metrics lack them, and one-line errors for bad
metrics files."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from matplotlib.image import imread  # noqa: E402

from former import FLAGS  # noqa: E402
from launch import launch  # noqa: E402
from mpips.report import report  # noqa: E402
from mpips.runlog import read_run  # noqa: E402

PLOTS = ("loss.png", "auc.png", "throughput.png")
PER_RUN = ("staleness", "workers", "servers")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An FM run under BSP and one under ASP (2 servers, 2 workers), with progress
    records and checkpoints."""
    tmp = tmp_path_factory.mktemp("report")
    for sync in ("bsp", "async"):
        res = launch(5, "train", "--model", "fm", "--servers", "2", "--sync", sync,
                     "--synthetic-rows", "60000", "--batch-size", "256",
                     "--embedding-dim", "4", "--table-rows", "16384", "--delay-jitter",
                     "0.004", "--progress-seconds", "0.2", "--checkpoint-every", "40",
                     "--checkpoint-keep", "10", "--checkpoint-dir", str(tmp / "ck"),
                     "--run-name", sync, "--metrics-out", str(tmp / f"{sync}.jsonl"),
                     *FLAGS, timeout=240)
        assert res.returncode == 0, res.stderr
    return tmp


def drawn(page: Path) -> list[str]:
    """The figures ``index.html`` shows (embedded PNGs), by file name."""
    text = page.read_text()
    names = [part.split('"', 1)[0] for part in text.split('<figure id="')[1:]]
    assert text.count('src="data:image/png;base64,') == len(names)
    return names


def test_every_plot_of_a_bsp_and_an_asp_run(runs, tmp_path):
    out = tmp_path / "rep"
    page = report([str(runs / "bsp.jsonl"), str(runs / "async.jsonl")], str(out),
                  score_checkpoints=True)
    want = [*PLOTS, *(f"{p}-{r}.png" for r in ("bsp", "async") for p in PER_RUN)]
    shown = drawn(page)
    assert sorted(shown) == sorted(want)
    for name in want:
        image = imread(out / name)
        assert image.shape[0] > 200 and image.shape[1] > 400 and image.std() > 0
    text = page.read_text()
    for label in ("test AUC", "samples/s", "staleness mean", "batch-size", "pacing"):
        assert f"<td>{label}</td>" in text
    assert "<td>bsp</td>" in text and "<td>async</td>" in text


def test_the_last_checkpoint_scores_the_final_test_auc(runs):
    """Scoring a run's checkpoints on its test rows: the final checkpoint gives the
    final record's AUC exactly, earlier ones are at smaller sample counts."""
    from mpips.report import checkpoint_auc

    run = read_run(runs / "bsp.jsonl")
    points = checkpoint_auc(run)
    assert len(points) == len(run.checkpoints) >= 3
    assert points[-1] == (run.final["samples"], run.final["auc"])
    assert [s for s, _ in points] == sorted(s for s, _ in points)


def fake_run(path: Path, with_servers: bool) -> Path:
    """Metrics as a newer mpips writes them: per-server load and validation AUC, and
    a resume (the second part's clock starts again)."""
    recs = []
    for part in range(2):
        for i in range(1, 5):
            rec = {"event": "progress", "epoch": 1, "samples": 1000 * (4 * part + i),
                   "planned": 8000, "seconds": 0.5 * i, "samples_per_s": 2000.0,
                   "loss": 0.7 - 0.01 * i, "eta_s": 1.0, "val_auc": 0.6 + 0.01 * i}
            if with_servers:
                rec.update(server_busy=[0.5, 0.25 + 0.05 * i], server_rows=[100, 80 + i],
                           map_epoch=part)
            recs.append(rec)
        if part == 0:
            recs.append({"event": "stopped", "samples": 4000, "seconds": 2.0})
    final = {"event": "final", "model": "lr", "samples": 8000, "auc": 0.7, "logloss": 0.5,
             "samples_per_s": 2000.0, "worker_samples": [4000, 4000],
             "worker_steps": [8, 8], "staleness": {"weights": {"hist": [5, 3, 1],
                                                               "mean": 0.5, "max": 2}}}
    if with_servers:
        final.update(server_busy=[0.5, 0.4], partition_moves=3, moved_rows=120,
                     map_epoch=1, standby_joined=0)
    recs.append(final)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def test_per_server_load_is_drawn_when_the_metrics_carry_it(tmp_path):
    run = read_run(fake_run(tmp_path / "new.jsonl", True))
    assert list(run.elapsed()) == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]
    t, busy = run.per_server("server_busy")
    assert busy.shape == (8, 2) and np.allclose(busy[:, 0], 0.5)
    page = report([str(tmp_path / "new.jsonl"), str(fake_run(tmp_path / "old.jsonl", False))],
                  str(tmp_path / "rep"), title="load")
    assert "servers-new.png" in drawn(page) and "servers-old.png" not in drawn(page)
    text = page.read_text()
    assert "<td>partition moves</td><td>3</td><td>–</td>" in text
    assert "<td>server busy share</td><td>0.50, 0.40</td>" in text


@pytest.mark.parametrize("text,message", [
    (None, ": no such metrics file"),
    ('{"event": "progress", "samples": 1}\nnot json\n', ":2: not a metrics record"),
    ("\n", ": no progress or final records")])
def test_bad_metrics_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "m.jsonl"
    if text is not None:
        path.write_text(text)
    res = subprocess.run([sys.executable, "-m", "mpips", "report", str(path), "--out",
                          str(tmp_path / "rep")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mpips: error: {path}{message}")
    assert not (tmp_path / "rep" / "index.html").exists()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium here (apt-get "
                    "install chromium)")
def test_a_headless_browser_shows_the_plots(tmp_path):
    """Chromium renders the page with its embedded plots: the lines' blue (matplotlib's
    first colour) covers thousands of pixels of the screenshot."""
    page = report([str(fake_run(tmp_path / "new.jsonl", True))], str(tmp_path / "rep"))
    shot = tmp_path / "shot.png"
    res = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                          "--hide-scrollbars", "--window-size=1000,3000",
                          f"--screenshot={shot}", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and shot.exists(), res.stderr
    rgb = imread(shot)[..., :3] * 255
    blue = np.abs(rgb - [31, 119, 180]).max(axis=-1) < 12
    assert blue.sum() > 5000
