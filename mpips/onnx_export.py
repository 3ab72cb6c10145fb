"""DeepFM's dense part (its MLP tower) as an ONNX graph, for serving runtimes. Needs the
``onnx`` extra (``pip install 'mpips[onnx]'``).

The graph takes ``embeddings`` (float32, rows x fields*k): per row the fields' scaled
embeddings ``v_f x_f`` side by side, field by field, as ``kernels.fm.field_inputs`` gives
them; it returns ``mlp_logit`` (rows x 1). The full logit adds the FM part, computed from
the exported file's ``tables/features/rows`` and ``dense/bias``: ``sigmoid(bias + sum_f
w_f x_f + FM pairs + mlp_logit)``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .durable import atomic_write
from .errors import ConfigError
from .export import Model
from .models import DeepFM

OPSET = 17


def check_onnx(path: str, model: Model) -> None:
    """Before anything is written: the model is DeepFM, the onnx package and the output
    folder are there."""
    if not isinstance(model.net, DeepFM):
        raise ConfigError(f"--onnx: only DeepFM has a dense part (an MLP tower), not "
                          f"{model.name}")
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ConfigError("--onnx needs the onnx package: pip install 'mpips[onnx]'") from None
    if not Path(path).resolve().parent.is_dir():
        raise ConfigError(f"--onnx {path}: folder {Path(path).resolve().parent} does not exist")


def write_onnx(model: Model, path: str) -> None:
    """Write a DeepFM ``model``'s MLP tower as an ONNX graph (checked by onnx's checker)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    net = model.net
    x, nodes, weights = "embeddings", [], []
    last = len(net.layers) - 1
    for i, (a, b) in enumerate(net.layers):
        w = model.tables[f"mlp{i}.w"].reshape(a, b).astype(np.float32)
        c = model.tables[f"mlp{i}.b"].reshape(b).astype(np.float32)
        weights += [numpy_helper.from_array(w, f"mlp{i}.w"),
                    numpy_helper.from_array(c, f"mlp{i}.b")]
        out = "mlp_logit" if i == last else f"h{i}"
        nodes.append(helper.make_node("Gemm", [x, f"mlp{i}.w", f"mlp{i}.b"],
                                      [out if i == last else f"z{i}"]))
        if i != last:
            nodes.append(helper.make_node("Relu", [f"z{i}"], [out]))
        x = out
    graph = helper.make_graph(
        nodes, "mpips_deepfm_mlp",
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT,
                                       ["rows", net.layers[0][0]])],
        [helper.make_tensor_value_info("mlp_logit", TensorProto.FLOAT, ["rows", 1])],
        weights)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="mpips")
    onnx.checker.check_model(proto)
    atomic_write(Path(path), proto.SerializeToString())
