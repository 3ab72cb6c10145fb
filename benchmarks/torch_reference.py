"""A one-process PyTorch (CPU) reference trainer of mpips' models, for quality and speed.

It trains LR, FM or DeepFM on exactly the rows mpips trains on -- the same hashed keys,
values and labels from ``mpips.data.plan.plan_data`` -- with the same hyper-parameters and
the same step sequence as an mpips BSP job with ``--workers`` workers: step ``t`` is the
concatenation of every worker's ``t``-th batch of its share, in each epoch's order (a
worker whose steps have run out drops out), and the loss is the summed BCE-with-logits divided by
``batch_size * workers``, as each mpips worker scales its gradient. Then it evaluates AUC and
log-loss on the held-out rows with ``mpips.metrics``.

PyTorch is an optional benchmark extra, not a dependency of mpips::

    pip install torch==2.13.0+cpu      # or torch==2.13.0 where that is the CPU build
    python benchmarks/torch_reference.py --model fm \\
        --config examples/criteo_kaggle.toml \\
        --data ../shared/data/criteo_kaggle/criteo_kaggle_dev.tsv --workers 2

Models (as in ``mpips/models.py``):

- ``lr``: ``z = b + sum_f w[key_f] x_f``.
- ``fm``: one row ``[w, v_1..v_k]`` per feature;
  ``z = b + sum_f w_f x_f + 1/2 sum_d ((sum_f v_fd x_f)^2 - sum_f (v_fd x_f)^2)``.
- ``deepfm``: the FM logit plus an MLP over the concatenated ``v_f x_f`` of all fields
  (ReLU hidden layers ``--hidden``, then one output unit).

Initial values: embeddings N(0, ``--init-std``) from PyTorch's generator (seeded with
``--torch-seed``, by default ``--seed``), linear weights and biases zero, MLP weights
Glorot-normal but the output layer's zero, and MLP biases zero. ``--init mpips`` instead
copies mpips' own hashed per-key initial values, so that both sides start from identical
parameters.

Optimisers: ``sgd`` (torch.optim.SGD), ``adagrad`` (torch.optim.Adagrad, eps 1e-10, zero
initial accumulator -- its defaults, which mpips uses) and ``adam`` (torch.optim.SparseAdam
for the embedding table, torch.optim.Adam for the dense parameters: lazy like mpips).
``--l2`` adds ``l2 * w`` to the gradient of every touched row, as mpips' servers do.

Validation and early stopping as mpips does them (``--val-fraction``, ``--eval-every``,
``--early-stop``): the same validation rows, scored at the same steps (every epoch but the
last, every N steps, and after the last step); with early stopping the parameters of the
best validation are kept and tested. Feature admission (``--min-count N``): a key's
lookups read its field's rare row (one more table row per field) until the training
batches have held it in N cells, counted after each step, as mpips' servers count.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Optional, Sequence

import numpy as np

try:
    import torch
    from torch import nn
except ImportError:  # pragma: no cover - the optional extra is missing
    sys.exit("torch_reference.py needs PyTorch (CPU): pip install torch==2.13.0+cpu")

from mpips.config import TrainConfig, from_mapping, load_toml
from mpips.data.schedule import schedules
from mpips.data.plan import eval_batch_rows, plan_data
from mpips.metrics import auc, logloss
from mpips.validation import EarlyStopping, eval_schedule

MODELS = ("lr", "fm", "deepfm")
OPTIMIZERS = ("sgd", "adagrad", "adam")


# ---------------------------------------------------------------------------- models

class SparseModel(nn.Module):
    """LR, FM or DeepFM over (n, F) keys and values; ``forward`` returns logits (n,)."""

    def __init__(self, model: str, table_rows: int, fields: int, dim: int,
                 hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.model = model
        self.dim = 0 if model == "lr" else dim
        # One row per hashed feature: [w] for LR, [w, v_1..v_k] for FM and DeepFM.
        self.table = nn.Embedding(table_rows, 1 + self.dim, sparse=True)
        self.bias = nn.Parameter(torch.zeros(1))
        self.mlp = nn.ModuleList()
        if model == "deepfm":
            sizes = [fields * dim, *hidden, 1]
            self.mlp.extend(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, keys: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
        rows = self.table(keys)                          # (n, F, 1 + k)
        x = vals.unsqueeze(-1)
        z = self.bias + (rows[..., 0] * vals).sum(dim=1)
        if self.dim == 0:
            return z
        vx = rows[..., 1:] * x                           # (n, F, k): v_f x_f
        s = vx.sum(dim=1)
        z = z + 0.5 * ((s * s).sum(dim=1) - (vx * vx).sum(dim=(1, 2)))
        if self.mlp:
            h = vx.reshape(vx.shape[0], -1)
            for layer in self.mlp[:-1]:
                h = torch.relu(layer(h))
            z = z + self.mlp[-1](h)[:, 0]
        return z


def init_torch(net: SparseModel, init_std: float, seed: int) -> None:
    """mpips' distributions from PyTorch's own generator."""
    torch.manual_seed(seed)
    with torch.no_grad():
        net.table.weight.zero_()
        if net.dim:
            net.table.weight[:, 1:].normal_(0.0, init_std)
        net.bias.zero_()
        for layer in net.mlp:
            if layer.out_features > 1:
                nn.init.xavier_normal_(layer.weight)    # N(0, 2 / (fan_in + fan_out))
            else:
                layer.weight.zero_()                    # the output layer starts at zero
            layer.bias.zero_()


def init_mpips(net: SparseModel, init_std: float, seed: int) -> None:
    """mpips' own initial values: hashed per (seed, table, key, column), as its servers
    compute them (``mpips.server.init_shards``)."""
    from mpips.kernels.init import normal_rows
    from mpips.ring import mix64, name_salt

    def rows(name: str, keys: np.ndarray, dim: int, col_from: int, std: float) -> np.ndarray:
        out = np.zeros((keys.size, dim), dtype=np.float32)
        if std > 0:
            salt = np.uint64(mix64(np.uint64(seed) ^ np.uint64(name_salt(name, 1 << 62))))
            normal_rows(out, keys, col_from, std, salt)
        return out

    with torch.no_grad():
        n, d = net.table.weight.shape
        name = "weights" if net.model == "lr" else "features"
        net.table.weight.copy_(torch.from_numpy(
            rows(name, np.arange(n, dtype=np.int64), d, 1, init_std if net.dim else 0.0)))
        net.bias.zero_()
        zero = np.zeros(1, dtype=np.int64)
        for i, layer in enumerate(net.mlp):
            b, a = layer.weight.shape
            std = float(np.sqrt(2.0 / (a + b))) if b > 1 else 0.0
            w = rows(f"mlp{i}.w", zero, a * b, 0, std)
            layer.weight.copy_(torch.from_numpy(w.reshape(a, b).T.copy()))  # x @ W in mpips
            layer.bias.zero_()


# ---------------------------------------------------------------------------- optimisers

class Optimizers:
    """The optimiser(s) for the parameters, with mpips' ``l2`` on touched rows and, for FM
    and DeepFM, mpips' ``linear_lr`` for the first-order weights (column 0 of the table):
    SGD's, Adagrad's and Adam's steps are proportional to the rate, so column 0's step is
    scaled by ``linear_lr / lr``."""

    def __init__(self, net: SparseModel, name: str, lr: float, l2: float,
                 linear_lr: Optional[float] = None) -> None:
        self.params = list(net.parameters())
        self.l2 = l2
        self.table = net.table.weight
        self.linear = (linear_lr / lr) if net.dim and linear_lr is not None else 1.0
        dense = [p for p in self.params if p is not net.table.weight]
        if name == "sgd":
            self.opts = [torch.optim.SGD(self.params, lr=lr)]
        elif name == "adagrad":
            self.opts = [torch.optim.Adagrad(self.params, lr=lr, eps=1e-10,
                                             initial_accumulator_value=0.0)]
        else:
            self.opts = [torch.optim.SparseAdam([net.table.weight], lr=lr, eps=1e-8),
                         torch.optim.Adam(dense, lr=lr, eps=1e-8)]

    def zero_grad(self) -> None:
        for o in self.opts:
            o.zero_grad(set_to_none=True)

    def step(self) -> None:
        if self.l2 > 0:
            for p in self.params:
                g = p.grad
                if g is None:
                    continue
                if g.is_sparse:
                    g = g.coalesce()
                    idx = g.indices()
                    p.grad = torch.sparse_coo_tensor(
                        idx, g.values() + self.l2 * p.detach()[idx[0]], g.shape).coalesce()
                else:
                    g.add_(p.detach(), alpha=self.l2)
        rows = before = None
        if self.linear != 1.0 and self.table.grad is not None:
            rows = self.table.grad.coalesce().indices()[0]
            before = self.table.detach()[rows, 0].clone()
        for o in self.opts:
            o.step()
        if rows is not None:
            with torch.no_grad():
                after = self.table[rows, 0]
                self.table[rows, 0] = before + self.linear * (after - before)


# ---------------------------------------------------------------------------- data

def tensors(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (torch.from_numpy(np.ascontiguousarray(batch.keys, dtype=np.int64)),
            torch.from_numpy(np.ascontiguousarray(batch.vals, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(batch.labels, dtype=np.float32)))


def bsp_steps(plan, cfg: TrainConfig, workers: int
              ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, list]]:
    """The global batches of an mpips BSP job with ``workers`` workers, in step order.

    Worker ``w`` runs its share's batches ``epochs`` times over, each epoch in the order
    mpips' schedule gives (shuffled unless the settings say ``shuffle = false``); BSP
    round ``t`` sums the pushes of every worker that still has a step ``t``, in worker
    order. Each step also lists every worker's keys, one per cell (admission counts them).
    """
    per_worker = []
    for sched in schedules(cfg, plan.train_range, workers):
        batches = list(plan.train.batches(*sched.rows, cfg.batch_size))
        per_worker.append([batches[b] for e in range(cfg.epochs) for b in sched.order(e)])
    steps = []
    for t in range(max(len(b) for b in per_worker)):
        parts = [tensors(b[t]) for b in per_worker if t < len(b)]
        seen = [b[t].keys.ravel() for b in per_worker if t < len(b)]
        steps.append((*(torch.cat(x) for x in zip(*parts)), seen))
    return steps


class Admission:
    """mpips' ``--min-count``: per key the cells of training batches that held it; keys
    seen fewer than ``min_count`` times before a step read their field's rare row (key
    ``rare_from + field``)."""

    def __init__(self, min_count: int, rare_from: int, fields: int) -> None:
        self.min_count, self.rare_from = min_count, rare_from
        self.counts = np.zeros(rare_from + fields, dtype=np.int64)

    def keys(self, keys: torch.Tensor) -> torch.Tensor:
        if self.min_count <= 0:
            return keys
        k = keys.numpy()
        rare = self.rare_from + np.arange(k.shape[1], dtype=np.int64)
        return torch.from_numpy(np.where(self.counts[k] >= self.min_count, k, rare))

    def saw(self, seen: list) -> None:
        for keys in seen:
            np.add.at(self.counts, keys, 1)


def score(net: "SparseModel", source, rows: tuple[int, int], batch_size: int,
          admission: Admission) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels of ``rows`` of ``source`` (in evaluation batches)."""
    probs, labels = [], []
    with torch.no_grad():
        for batch in source.batches(*rows, eval_batch_rows(batch_size)):
            k, v, _ = tensors(batch)
            z = net(admission.keys(k), v).double().numpy()
            probs.append(1.0 / (1.0 + np.exp(-z)))
            labels.append(batch.labels.astype(np.float64))
    return np.concatenate(probs), np.concatenate(labels)


# ---------------------------------------------------------------------------- run

def train_config(args: argparse.Namespace) -> TrainConfig:
    """mpips' settings: defaults, then ``--config``, then the flags given."""
    base = load_toml(args.config) if args.config else TrainConfig()
    values = {k: v for k, v in vars(args).items()
              if v is not None and k in TrainConfig.__dataclass_fields__}
    return from_mapping(values, "command line", base)


def run(args: argparse.Namespace) -> dict:
    cfg = train_config(args)
    torch.set_num_threads(args.threads)
    torch.sparse.check_sparse_tensor_invariants.disable()   # opt out explicitly (fast)
    plan = plan_data(cfg)
    table_rows = int(getattr(plan, "table_rows", cfg.table_rows))
    fields = plan.train.fields
    admission = Admission(cfg.min_count, table_rows, fields)
    net = SparseModel(cfg.model, table_rows + (fields if cfg.min_count > 0 else 0), fields,
                      cfg.embedding_dim, cfg.hidden)
    torch_seed = cfg.seed if args.torch_seed is None else args.torch_seed
    (init_mpips if args.init == "mpips" else init_torch)(net, cfg.init_std,
                                                          cfg.seed if args.init == "mpips"
                                                          else torch_seed)
    if cfg.optimizer not in OPTIMIZERS:
        raise SystemExit(f"--optimizer {cfg.optimizer}: the reference has "
                         f"{', '.join(OPTIMIZERS)}")
    opt = Optimizers(net, cfg.optimizer, cfg.lr, cfg.l2, cfg.linear_lr)
    steps = bsp_steps(plan, cfg, args.workers)
    scale = 1.0 / (cfg.batch_size * args.workers)
    bce = nn.BCEWithLogitsLoss(reduction="sum")

    # Warm-up on a throw-away copy, so the timed loop does not pay first-call costs.
    if steps:
        scratch = SparseModel(cfg.model, 1, fields, cfg.embedding_dim, cfg.hidden)
        k, v, y, _ = steps[0]
        bce(scratch(torch.zeros_like(k), v), y).backward()

    validations = eval_schedule(cfg, plan.train_range, args.workers)
    stopping = EarlyStopping(cfg.early_stop)
    best: Optional[tuple[dict, np.ndarray]] = None

    def validate(step: int) -> bool:
        """Score the validation rows after ``step`` steps; True: stop early."""
        nonlocal best
        p, y = score(net, plan.val, plan.val_range, cfg.batch_size, admission)
        decision = stopping.observe(step, auc(y, p))
        if decision.best and cfg.early_stop:
            best = ({k: t.detach().clone() for k, t in net.state_dict().items()},
                    admission.counts.copy())
        return decision.stop

    samples, loss_sum, done = 0, 0.0, 0
    started = time.perf_counter()
    for keys, vals, labels, seen in steps:
        if cfg.validating and validations.due(done) and validate(done):
            break
        opt.zero_grad()
        loss = bce(net(admission.keys(keys), vals), labels)
        (loss * scale).backward()
        loss = loss.detach()
        opt.step()
        admission.saw(seen)
        samples += labels.numel()
        loss_sum += loss.item()
        done += 1
    if cfg.validating and stopping.last_step != done:
        validate(done)
    if best is not None and stopping.best_step != done:
        net.load_state_dict(best[0])
        admission.counts = best[1]
    seconds = time.perf_counter() - started

    p, y = score(net, plan.test, plan.test_range, cfg.batch_size, admission)
    extra = {"val_auc": stopping.best_auc, "best_step": stopping.best_step,
             "stopped_early": stopping.stopped,
             "validations": [[s, a] for s, a in stopping.history]} if cfg.validating else {}
    return {**extra,"event": "final", "impl": "torch", "torch": torch.__version__,
            "model": cfg.model, "optimizer": cfg.optimizer, "lr": cfg.lr,
            "linear_lr": cfg.linear_lr,
            "workers": args.workers, "batch_size": cfg.batch_size, "epochs": cfg.epochs,
            "embedding_dim": cfg.embedding_dim, "init_std": cfg.init_std,
            "hidden": list(cfg.hidden), "table_rows": table_rows, "seed": cfg.seed,
            "l2": cfg.l2, "min_count": cfg.min_count,
            "torch_seed": torch_seed, "init": args.init, "threads": args.threads,
            "steps": len(steps), "auc": auc(y, p), "logloss": logloss(y, p),
            "test_rows": int(y.size), "samples": samples, "seconds": seconds,
            "samples_per_s": samples / seconds if seconds > 0 else float("nan"),
            "train_loss": loss_sum / max(samples, 1)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="PyTorch (CPU) reference trainer of mpips' "
                                "LR, FM and DeepFM on the same rows and step sequence.")
    p.add_argument("--config", metavar="FILE.toml", help="mpips settings file; flags "
                   "override it")
    p.add_argument("--model", choices=MODELS)
    p.add_argument("--data", metavar="PATH")
    p.add_argument("--test", metavar="PATH")
    p.add_argument("--test-fraction", type=float, metavar="F")
    p.add_argument("--synthetic-rows", type=int, metavar="N")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, metavar="N", help="rows per worker per step")
    p.add_argument("--workers", type=int, default=2, help="mpips workers whose BSP steps "
                   "to reproduce (default 2)")
    p.add_argument("--lr", type=float)
    p.add_argument("--linear-lr", type=float)
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--l2", type=float)
    p.add_argument("--table-rows", type=int, metavar="N")
    p.add_argument("--embedding-dim", type=int, metavar="K")
    p.add_argument("--init-std", type=float, metavar="S")
    p.add_argument("--hidden", metavar="H1,H2")
    p.add_argument("--seed", type=int, help="mpips' seed: feature hashing (and --init mpips)")
    p.add_argument("--val-fraction", type=float, metavar="F")
    p.add_argument("--eval-every", type=int, metavar="N")
    p.add_argument("--early-stop", type=int, metavar="P")
    p.add_argument("--min-count", type=int, metavar="N")
    p.add_argument("--torch-seed", type=int, help="PyTorch's generator for the initial "
                   "values (default --seed)")
    p.add_argument("--init", choices=("torch", "mpips"), default="torch",
                   help="torch: same distributions, PyTorch's generator (default); mpips: "
                   "mpips' exact hashed initial values")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.workers < 1:
        raise SystemExit("--workers must be >= 1")
    rec = run(args)
    if args.json:
        print(json.dumps(rec))
    else:
        print(f"[torch] {rec['model']} + {rec['optimizer']} (lr {rec['lr']}), "
              f"{rec['workers']} x {rec['batch_size']} rows a step, {rec['steps']} steps: "
              f"AUC {rec['auc']:.4f}  logloss {rec['logloss']:.4f} on {rec['test_rows']:,} "
              f"test rows; {rec['samples']:,} samples in {rec['seconds']:.2f}s "
              f"({rec['samples_per_s']:,.0f} samples/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
