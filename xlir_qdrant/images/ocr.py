"""Text in photos (signs, documents, screenshots), read by RapidOCR for `xlir index --read-text`.

RapidOCR (Apache-2.0) ships PP-OCR's detection and recognition networks in its wheel and runs them
on onnxruntime: no network. It reads Latin and Chinese script well, Japanese kana and Korean
poorly. It costs 0.7-1.5 s a photo on one core of this kind of machine (bench/ocr.py), 30 times
the rest of indexing, which is why it runs only when asked. The text is stored in the payload
(``text``) with a full-text index; a query whose words are all in a photo's text ranks it
first (search.py).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ModelUnavailable

log = logging.getLogger(__name__)

# Photos are read at this long side: small print in a 12 MP photo is lost below it, and the
# detector's cost grows with the area.
OCR_SIDE = 960
MIN_CONFIDENCE = 0.6  # recognised lines below this are mostly noise on textures (bench/ocr.py)


def available() -> bool:
    return importlib.util.find_spec("rapidocr") is not None


class TextReader:
    """Reads the text in an image; one engine per thread (the engines keep per-call state)."""

    def __init__(self) -> None:
        if not available():
            raise ModelUnavailable("--read-text needs the package 'rapidocr'; reinstall xlir (`pip install .`)")
        self._local = threading.local()

    def read(self, image: Image.Image) -> str:
        """The lines of text found, one per line ("" when there is none)."""
        image = image if image.mode == "RGB" else image.convert("RGB")
        if max(image.size) > OCR_SIDE:
            image = image.copy()
            image.thumbnail((OCR_SIDE, OCR_SIDE), Image.BILINEAR)
        result = self._engine()(np.ascontiguousarray(np.asarray(image)[:, :, ::-1]), use_cls=False)
        texts, scores = result.txts or (), result.scores or ()
        return "\n".join(t.strip() for t, s in zip(texts, scores, strict=True) if s >= MIN_CONFIDENCE and t.strip())

    def _engine(self) -> Any:
        engine = getattr(self._local, "engine", None)  # thread-local storage, not a probed capability
        if engine is None:
            from rapidocr import RapidOCR

            engine = RapidOCR(params={"Global.log_level": "error"})
            self._local.engine = engine
        return engine
