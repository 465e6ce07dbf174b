"""Run a torch image network with onnxruntime on CPU: exported once, checked equal, cached.

On a CPU, onnxruntime runs the bundled EfficientNet-Lite about 6x faster than torch eager
(`bench/ingest.py` measures both in one run). The export (torch.export based, ~10 s) happens
the first time a model is needed; the file lands in the cache folder under a name that
identifies the weights, so later runs load it in milliseconds and never import torch.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

log = logging.getLogger(__name__)

# Logits of the export and of torch must agree this closely on the check batch, or the
# export is discarded and torch is used (fp32 both sides: differences are ~1e-5).
EXPORT_ATOL = 1e-3


class ExportMismatch(RuntimeError):
    """The exported network does not compute what the torch network computes."""


def available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnxscript", "onnx"))


class OnnxNet:
    """An onnxruntime session with one input and one output, sized to share the CPU.

    Spinning is off: the session's threads sleep between batches instead of busy-waiting,
    because the decode workers need those cores while the next batch is being prepared.
    """

    def __init__(self, path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or max(1, os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.path = path

    def __call__(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        return self.session.run(None, {self.input: np.ascontiguousarray(x, dtype=np.float32)})[0]


def cached_net(path: Path, build: Callable[[], Any], example_shape: tuple[int, ...]) -> OnnxNet:
    """The network at ``path``, exported from ``build()`` (a torch module) when missing or torn.

    A fresh export is run on a random batch by both runtimes before it is kept; a file that
    fails to load (torn by a crash, written by another version) is exported again.
    """
    if path.is_file():
        try:
            return OnnxNet(path)
        except Exception as exc:  # noqa: BLE001 - any load failure means: export again
            log.info("re-exporting %s: %s", path.name, exc)
    export(build(), path, example_shape)
    return OnnxNet(path)


def export(module: Any, path: Path, example_shape: tuple[int, ...]) -> None:
    """Export ``module`` (batch dimension dynamic) to ``path``, after checking it matches."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.randn(*example_shape, generator=torch.Generator().manual_seed(0))
    module = module.eval()
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        program = torch.onnx.export(
            module, (example,), dynamo=True, input_names=["pixels"], output_names=["out"],
            dynamic_shapes=({0: torch.export.Dim("batch")},), optimize=True, verbose=False,
        )
        program.save(tmp)
        check = torch.randn(3, *example_shape[1:], generator=torch.Generator().manual_seed(1))
        with torch.inference_mode():
            want = module(check).float().numpy()
        got = OnnxNet(Path(tmp))(check.numpy())
        err = float(np.abs(got - want).max())
        if not err <= EXPORT_ATOL:
            raise ExportMismatch(f"exported network differs from torch by {err:.2e}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
