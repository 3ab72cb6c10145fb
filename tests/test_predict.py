"""``mpips predict`` and ``mpips export`` end to end: a model trained under mpiexec, then
scored in one process from its checkpoint and from its exported file."""
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from former import FLAGS
from launch import launch
from saved import final_state
from mpips.checkpoint import manifest
from mpips.checkpoint.layout import complete_steps
from mpips.config import TrainConfig
from mpips.checkpoint.shardfile import ServerFile
from mpips.data.synthetic import SyntheticCTR
from mpips.errors import CheckpointError, ConfigError, DataError
from mpips.checkpoint.whole import saved_layout
from mpips.export import Model
from mpips.data.plan import eval_batch_rows
from mpips.predict import Cut, read_cut, run_predict
from mpips.ring import PartitionMap
from textdata import criteo_text, libsvm_text, write

MODELS = ("lr", "fm", "deepfm")


def train(tmp: Path, name: str, *args: str) -> dict:
    """Train under mpiexec (1 scheduler, 1 server, 2 workers, unless ``args`` ask for a
    standby server) with a final checkpoint; returns the final metrics record."""
    metrics = tmp / f"{name}.jsonl"
    res = launch(4, "train", "--checkpoint-every", "100000", "--checkpoint-dir",
                 str(tmp / "ck"), "--run-name", name, "--metrics-out", str(metrics),
                 "--batch-size", "128", "--table-rows", "4096", *FLAGS, *args, timeout=240)
    assert res.returncode == 0, res.stderr
    return json.loads(metrics.read_text().splitlines()[-1])


@pytest.fixture(scope="module")
def criteo(tmp_path_factory):
    """LR, FM and DeepFM trained on Criteo text with a test file of their own; and
    DeepFM whose partitions moved while it trained (a standby server joined, seeded
    partitions moved every 4 steps), so its checkpoint files have holes and rows in the
    order they arrived."""
    tmp = tmp_path_factory.mktemp("predict")
    data = write(tmp, "train.tsv", criteo_text(3000, 1))
    test = write(tmp, "test.tsv", criteo_text(1500, 2))
    common = ("--data", str(data), "--test", str(test), "--embedding-dim", "4", "--hidden",
              "16,8")
    finals = {m: train(tmp, m, "--model", m, *common) for m in MODELS}
    finals["moved"] = train(tmp, "moved", "--model", "deepfm", *common, "--standby", "1",
                            "--join-at", "3", "--move-every", "4")
    assert finals["moved"]["moves"] >= 3
    return tmp, data, test, finals


def predict(model: Path, out: Path, *args: str) -> dict:
    """``mpips predict`` in a subprocess (no mpiexec); returns its JSON record."""
    record = out.with_suffix(".json")
    res = subprocess.run([sys.executable, "-m", "mpips", "predict", str(model), "--out",
                          str(out), "--metrics-out", str(record), *args],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(record.read_text())


@pytest.mark.parametrize("name", [*MODELS, "moved"])
def test_checkpoint_and_export_give_the_jobs_own_test_metrics(criteo, name):
    """Scored on the job's test file, from the checkpoint and from the exported file,
    the AUC and log-loss are the training job's to the last bit; so are those of the
    job's own test rows (no --data); every probability agrees across the three."""
    tmp, _, test, finals = criteo
    final = finals[name]
    export = tmp / f"{name}.h5"
    res = subprocess.run([sys.executable, "-m", "mpips", "export", str(tmp / "ck" / name),
                          "--out", str(export)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    runs = [predict(tmp / "ck" / name, tmp / f"{name}-ck.npy", "--data", str(test)),
            predict(export, tmp / f"{name}-ex.csv", "--data", str(test)),
            predict(export, tmp / f"{name}-own.npy")]
    for rec in runs:
        assert (rec["auc"], rec["logloss"]) == (final["auc"], final["logloss"])
        assert rec["rows"] == final["test_rows"] == 1500
    probs = np.load(tmp / f"{name}-ck.npy")
    text = (tmp / f"{name}-ex.csv").read_text().splitlines()
    assert text[0] == "p" and len(text) == 1501
    assert np.array_equal(probs, np.array(text[1:], dtype=np.float64))
    assert np.array_equal(probs, np.load(tmp / f"{name}-own.npy"))
    assert probs.dtype == np.float64 and ((probs > 0) & (probs < 1)).all()


def stored(run_dir: Path, name: str, rows: int, dim: int) -> np.ndarray:
    """A table rebuilt by key from the final checkpoint's server datasets (test-side)."""
    step_dir = complete_steps(run_dir)[0]
    doc = manifest.load(step_dir)
    state = final_state(run_dir)
    files = [ServerFile(step_dir / f"server-{s:04d}.h5", e) for s, e in
             enumerate(doc["servers"])]
    layout = saved_layout(files, name, rows, PartitionMap(files[0].read("owner"),
                                                          len(files)))
    out = np.full((rows, dim), np.nan, np.float32)
    for s, f in enumerate(files):
        keys, at = layout.held(s)
        out[keys] = state[f"{s}/tables/{name}/rows"][at]
        f.close()
    return out


@pytest.mark.parametrize("name", ["deepfm", "moved"])
def test_the_export_round_trips_every_row(criteo, name):
    """Every row of every table is in the file, in key order with its keys; dense layers
    in their own shapes; no optimiser state; reloaded, the same arrays (also after
    moves)."""
    tmp, _, _, _ = criteo
    run_dir = tmp / "ck" / name
    model = Model.from_checkpoint(run_dir)
    path = tmp / f"rt-{name}.h5"
    model.save(path)
    back = Model.load(path)
    for spec in model.net.tables:
        want = stored(run_dir, spec.name, spec.rows, spec.dim)
        assert not np.isnan(want).any()
        assert np.array_equal(model.tables[spec.name], want)
        assert np.array_equal(back.tables[spec.name], want)
    with h5py.File(path, "r") as f:
        assert np.array_equal(f["tables/features/keys"][()], np.arange(4096))
        assert f["tables/features/rows"].shape == (4096, 5)
        assert f["dense/mlp0.w"].shape == (39 * 4, 16) and f["dense/mlp2.b"].shape == (1,)
        names = []
        f.visit(names.append)
        assert not [n for n in names if "accum" in n]
        index = json.loads(f.attrs["index"])
    assert index["input"]["format"] == "criteo" and index["input"]["seed"] == 0
    assert index["settings"]["model"] == "deepfm"
    assert index["workers"] == (2 if name == "deepfm" else 1)


def corrupt_copy(src: Path, dst: Path, how: str) -> Path:
    data = bytearray(src.read_bytes())
    if how == "flip":             # a byte inside the sparse table's rows
        with h5py.File(src, "r") as f:
            at = f["tables/features/rows"].id.get_offset() + 1000
        data[at] ^= 0x40
    elif how == "truncate":
        data = data[:len(data) * 2 // 3]
    elif how == "index":          # the index attribute's text
        at = data.find(b'"embedding_dim": 4')
        data[at + len('"embedding_dim": ')] = ord("5")
    else:
        data = bytearray(b"not a model\n")
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize("how", ["flip", "truncate", "index", "junk"])
def test_a_corrupted_export_is_refused_in_one_line(criteo, how):
    tmp, _, test, _ = criteo
    good = tmp / "good.h5"
    if not good.exists():
        Model.from_checkpoint(tmp / "ck" / "fm").save(good)
    bad = corrupt_copy(good, tmp / f"bad-{how}.h5", how)
    with pytest.raises(CheckpointError, match=str(bad)):
        Model.load(bad)
    res = subprocess.run([sys.executable, "-m", "mpips", "predict", str(bad), "--data",
                          str(test), "--out", str(tmp / f"bad-{how}.csv")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mpips: error: {bad}:"), res.stderr
    assert not (tmp / f"bad-{how}.csv").exists()


def test_raw_lines_without_mpi(criteo):
    """``Model.load(path).predict(lines)`` in a fresh interpreter imports no MPI and gives
    the command's probabilities, for lines with and without their label."""
    tmp, _, test, _ = criteo
    export = tmp / "lr-api.h5"
    Model.from_checkpoint(tmp / "ck" / "lr").save(export)
    want = np.load(tmp / "lr-ck.npy") if (tmp / "lr-ck.npy").exists() else \
        Model.load(export).predict(test.read_text())
    code = (f"import sys, numpy as np\nfrom mpips.export import Model\n"
            f"m = Model.load({str(export)!r})\nlines = open({str(test)!r}).read().splitlines()\n"
            f"p = m.predict(lines)\nq = m.predict([l.split('\\t', 1)[1] for l in lines])\n"
            f"assert 'mpi4py' not in sys.modules\nnp.save({str(tmp / 'api.npy')!r}, "
            f"np.stack([p, q]))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    p, q = np.load(tmp / "api.npy")
    assert np.array_equal(p, want) and np.array_equal(q, want)


def test_data_without_labels_get_the_same_scores(criteo):
    """A test file without its label column: the same probabilities, no AUC."""
    tmp, _, test, _ = criteo
    bare = write(tmp, "bare.tsv", "".join(line.split("\t", 1)[1] + "\n"
                                         for line in test.read_text().splitlines()))
    rec = predict(tmp / "ck" / "fm", tmp / "bare.npy", "--data", str(bare))
    full = predict(tmp / "ck" / "fm", tmp / "full.npy", "--data", str(test))
    assert not rec["labeled"] and "auc" not in rec and full["labeled"]
    assert np.array_equal(np.load(tmp / "bare.npy"), np.load(tmp / "full.npy"))


def test_settings_that_change_the_keys_are_refused(criteo, tmp_path):
    tmp, _, test, _ = criteo
    out = str(tmp_path / "p.csv")
    with pytest.raises(DataError, match="--format libsvm: the model was trained on criteo"):
        run_predict(str(tmp / "ck" / "lr"), str(test), out, fmt="libsvm")
    cfg = write(tmp_path, "c.toml", "model = 'lr'\ntable-rows = 4096\nseed = 3\n")
    with pytest.raises(ConfigError, match="c.toml: seed is 3, the model was trained with 0"):
        run_predict(str(tmp / "ck" / "lr"), str(test), out, config=str(cfg))
    with pytest.raises(ConfigError, match="--out .*p.txt: must end in .csv"):
        run_predict(str(tmp / "ck" / "lr"), str(test), str(tmp_path / "p.txt"))
    assert not (tmp_path / "p.csv").exists()


def test_the_cut_is_the_workers_evaluation_cut():
    """``Cut`` reads the rows a job's workers evaluate, in their batches: each worker's
    share of the test rows, batch by batch."""
    src = SyntheticCTR(rows=3000)
    cut = Cut(1000, 3000, 3, 300)
    got = list(read_cut(src, cut, cut.batches()))
    want = [b for w in range(3) for b in src.batches(*cut.shares()[w], 300)]
    sizes = [300, 300, 66, 300, 300, 67, 300, 300, 67]
    assert [len(b) for b in got] == [len(b) for b in want] == sizes
    for a, b in zip(got, want):
        assert np.array_equal(a.keys, b.keys)
    assert cut.rows(cut.batches()[2:5]) == 66 + 600
    assert eval_batch_rows(TrainConfig().batch_size) == 8192 and eval_batch_rows(9000) == 9000


def test_deepfm_on_libsvm_keeps_its_width(tmp_path):
    """DeepFM trained on libSVM files of different widths (the test file is wider): the
    test file alone, read at the model's width, gives the job's metrics; a line wider
    than the model is a bad line naming the file."""
    data = write(tmp_path, "a.svm", libsvm_text(1200, 1))
    test = write(tmp_path, "b.svm", libsvm_text(600, 2) + "1 1:1 2:1 3:1 4:1 5:1 6:1 7:1\n")
    final = train(tmp_path, "svm", "--model", "deepfm", "--format", "libsvm", "--data",
                  str(data), "--test", str(test), "--embedding-dim", "4", "--hidden", "8")
    rec = predict(tmp_path / "ck" / "svm", tmp_path / "svm.npy", "--data", str(test))
    assert (rec["auc"], rec["logloss"]) == (final["auc"], final["logloss"])
    wide = write(tmp_path, "w.svm", "1 " + " ".join(f"{i}:1" for i in range(1, 12)) + "\n")
    with pytest.raises(DataError, match="w.svm:1: 11 features, more than the 7 slots"):
        run_predict(str(tmp_path / "ck" / "svm"), str(wide), str(tmp_path / "w.csv"))


def test_under_mpiexec_with_servers(criteo, tmp_path):
    """``mpiexec -n 4 mpips predict CK --servers 1``: the probabilities and metrics of one
    process; an exported file, or no --servers, under mpiexec is a one-line error."""
    tmp, _, test, final = criteo[0], criteo[1], criteo[2], criteo[3]["deepfm"]
    out = tmp_path / "ranks.npy"
    res = launch(4, "predict", str(tmp / "ck" / "deepfm"), "--servers", "1", "--data",
                 str(test), "--out", str(out), "--metrics-out", str(tmp_path / "r.json"))
    assert res.returncode == 0, res.stderr
    rec = json.loads((tmp_path / "r.json").read_text())
    assert (rec["auc"], rec["logloss"]) == (final["auc"], final["logloss"])
    assert rec["servers"] == 1 and rec["workers"] == 2
    one = predict(tmp / "ck" / "deepfm", tmp_path / "one.npy", "--data", str(test))
    assert np.array_equal(np.load(out), np.load(tmp_path / "one.npy")) and one["rows"] == 1500
    Model.from_checkpoint(tmp / "ck" / "lr").save(tmp_path / "m.h5")
    for args in (["--servers", "1"], []):
        res = launch(3, "predict", str(tmp_path / "m.h5"), "--out", str(tmp_path / "x.csv"),
                     *args)
        assert res.returncode == 2 and "Traceback" not in res.stderr
        assert res.stderr.count("mpips: error") in (1, 3) and not (tmp_path / "x.csv").exists()


def test_onnx_mlp_tower_computes_the_models_mlp(criteo, tmp_path):
    """``mpips export --onnx``: DeepFM's MLP tower run by onnxruntime gives the model's
    own MLP logits (float32 against float64); LR has no tower, a one-line error."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    tmp, _, test, _ = criteo
    h5, graph = tmp_path / "d.h5", tmp_path / "d.onnx"
    res = subprocess.run([sys.executable, "-m", "mpips", "export", str(tmp / "ck" / "deepfm"),
                          "--out", str(h5), "--onnx", str(graph)], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    model = Model.load(h5)
    batch, _ = model.inputs.batch(test.read_text().splitlines()[:400])
    lookups = model.net.lookups(batch)
    for name, lk in lookups.items():
        lk.rows[:] = model.tables[name][lk.keys]
    _, acts, weights = model.net._forward(batch, lookups)
    want = (acts[-1] @ weights[-1][0] + weights[-1][1])[:, 0]
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    got = session.run(None, {"embeddings": acts[0].astype(np.float32)})[0][:, 0]
    assert got.shape == (400,) and np.allclose(got, want, rtol=1e-4, atol=1e-5)
    res = subprocess.run([sys.executable, "-m", "mpips", "export", str(tmp / "ck" / "lr"),
                          "--out", str(tmp_path / "l.h5"), "--onnx", str(tmp_path / "l.onnx")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.strip().endswith("not lr")
    assert not (tmp_path / "l.onnx").exists() and not (tmp_path / "l.h5").exists()


def test_prepared_rows_score_like_their_text(criteo, tmp_path):
    """The test file prepared by 'mpips prep' gives the text's probabilities and the job's
    metrics; prepared with another hashing seed, it is refused naming the folder."""
    tmp, _, test, finals = criteo
    for seed in ("0", "3"):
        res = launch(1, "prep", str(test), "--out", str(tmp_path / f"prep{seed}"), "--seed",
                     seed)
        assert res.returncode == 0, res.stderr
    rec = predict(tmp / "ck" / "fm", tmp_path / "s.npy", "--data", str(tmp_path / "prep0"))
    assert (rec["auc"], rec["logloss"]) == (finals["fm"]["auc"], finals["fm"]["logloss"])
    text = predict(tmp / "ck" / "fm", tmp_path / "t.npy", "--data", str(test))
    assert np.array_equal(np.load(tmp_path / "s.npy"), np.load(tmp_path / "t.npy"))
    assert text["rows"] == rec["rows"] == 1500
    with pytest.raises(DataError, match="prep3: prepared with another format, schema or "
                                        "hashing seed"):
        run_predict(str(tmp / "ck" / "fm"), str(tmp_path / "prep3"), str(tmp_path / "x.npy"))


def test_csv_columns_are_found_by_the_header(tmp_path):
    """A CSV model scores a file whose columns come in another order (and one without the
    label) as it scores its own test file; raw lines take the training header."""
    rng = np.random.default_rng(4)
    rows = [(int(rng.random() < 0.3), f"{rng.normal(5, 3):.2f}", f"s{rng.integers(30)}",
             f"a{rng.integers(50)}") for _ in range(2400)]
    write(tmp_path, "train.csv", "clicked,price,site,ad\n"
          + "".join(f"{y},{p},{s},{a}\n" for y, p, s, a in rows[:1800]))
    test = write(tmp_path, "test.csv", "clicked,price,site,ad\n"
                 + "".join(f"{y},{p},{s},{a}\n" for y, p, s, a in rows[1800:]))
    moved = write(tmp_path, "moved.csv", "ad,site,extra,price\n"
                  + "".join(f"{a},{s},x,{p}\n" for _, p, s, a in rows[1800:]))
    cfg = write(tmp_path, "c.toml", 'format = "csv"\n[csv]\nlabel = "clicked"\n'
                'numeric = ["price"]\ncategorical = ["site", "ad"]\n')
    final = train(tmp_path, "csv", "--config", str(cfg), "--data", str(tmp_path / "train.csv"),
                  "--test", str(test), "--model", "fm", "--embedding-dim", "4")
    rec = predict(tmp_path / "ck" / "csv", tmp_path / "t.npy", "--data", str(test),
                  "--config", str(cfg))
    assert (rec["auc"], rec["logloss"]) == (final["auc"], final["logloss"])
    bare = predict(tmp_path / "ck" / "csv", tmp_path / "m.npy", "--data", str(moved))
    assert not bare["labeled"]
    want = np.load(tmp_path / "t.npy")
    assert np.array_equal(np.load(tmp_path / "m.npy"), want)
    lines = test.read_text().splitlines()[1:]
    model = Model.from_checkpoint(tmp_path / "ck" / "csv")
    assert np.array_equal(model.predict(lines), want)
    assert np.array_equal(model.predict([f"{a},{s},x,{p}" for _, p, s, a in rows[1800:]],
                                        header="ad,site,extra,price"), want)
