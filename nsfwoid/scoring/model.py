"""The open_nsfw weights (location, sha256), the model's identity, and the session that runs them: onnxruntime in
fp32, or OpenVINO in bf16 (bf16.py)."""

from __future__ import annotations

import contextlib
import hashlib
import io
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .. import metrics
from ..config import Settings
from ..logging import get_logger
from . import bf16
from .imaging import model_input

MODEL_NAME = "open_nsfw"
MODEL_SHA256 = "864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa"
NSFW_COLUMN = 1  # output columns are [sfw, nsfw]

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


class ModelError(RuntimeError):
    """The weights are missing or are not the ones we expect. Fatal at startup."""


def packaged_model_path() -> Path:
    return Path(str(resources.files("nsfwoid").joinpath("open-nsfw.onnx")))


def verify_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise ModelError(f"cannot read model weights at {path}: {exc}") from exc
    actual = digest.hexdigest()
    if actual != MODEL_SHA256:
        raise ModelError(f"model weights at {path} have sha256 {actual}, expected {MODEL_SHA256}")
    return actual


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise ModelError("onnxruntime is not installed: install nsfwoid[cpu] or nsfwoid[gpu]") from exc
    return onnxruntime


def _preload_cuda_libraries(ort) -> None:
    """onnxruntime-gpu links to CUDA and cuDNN by name only: it finds the NVIDIA wheels that the [gpu] extra
    installs beside it only through preload_dlls. What it fails to load, it prints: that goes to the log instead
    of stdout, which must hold nothing but ECS JSON."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        ort.preload_dlls()
    if printed.getvalue().strip():
        get_logger().warning("cuda libraries not all loaded", **{"error.message": printed.getvalue().strip()})


def provider_options(providers: list[str], settings: Settings) -> list:
    """The providers with their options. On CUDA: TF32 convolutions only when NSFWOID_TF32 allows them; and
    cuDNN's heuristic choice of convolution algorithm: its default, an exhaustive search, runs again for every
    batch size it has not seen, and on the H100 it found nothing faster (docs/performance.md, GPU)."""
    cuda = {"use_tf32": "1" if settings.tf32 else "0", "cudnn_conv_algo_search": "HEURISTIC"}
    return [(name, cuda) if name == CUDA else name for name in providers]


def choose_providers(requested: tuple[str, ...], available: list[str]) -> list[str]:
    if not requested:
        return [CUDA, CPU] if CUDA in available else [CPU]
    missing = [p for p in requested if p not in available]
    if missing:
        raise ModelError(f"providers {missing} are not available; this onnxruntime has {available}")
    return list(requested)


@dataclass
class Model:
    session: object
    input_name: str
    sha256: str
    provider: str
    identity: dict[str, str]  # what names its scores: /healthz, JSON answers, KServe

    # 0: each run takes the batch as it comes. Otherwise every run takes exactly this many images: a batch is
    # split into runs of this size, and the last is padded with zeros. On CUDA a run whose batch size differs
    # from the last run's takes over 100 ms instead of about 4 (docs/performance.md, GPU). On the CPU, padding
    # costs what scoring as many images would, so it is not done there.
    fixed_batch: int = 0

    def run_crops(self, crops: list[np.ndarray]) -> np.ndarray:
        """The decode workers' uint8 crops → their NSFW probabilities. Blocking: the batcher's inference thread."""
        with metrics.stage_cpu("batching"):
            batch = model_input(np.stack(crops))
        return self.run(batch)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """N×224×224×3 float32 tensors → N NSFW probabilities. Blocking: call it off the event loop."""
        if not self.fixed_batch:
            return self._probabilities(batch)
        size = self.fixed_batch
        return np.concatenate([self._padded_probabilities(batch[start:start + size])
                               for start in range(0, len(batch), size)])

    def _padded_probabilities(self, chunk: np.ndarray) -> np.ndarray:
        images = len(chunk)
        if images < self.fixed_batch:
            chunk = np.concatenate([chunk, np.zeros((self.fixed_batch - images, *chunk.shape[1:]), chunk.dtype)])
        return self._probabilities(chunk)[:images]

    def _probabilities(self, batch: np.ndarray) -> np.ndarray:
        (probabilities,) = self.session.run(None, {self.input_name: batch})
        return probabilities[:, NSFW_COLUMN]


def model_identity(sha256: str, precision: str) -> dict[str, str]:
    """What names a model's scores. A score of another precision is a score of another model: its id is the
    weights' sha256 in fp32, and a hash of the sha256 and the precision otherwise."""
    model_id = sha256 if precision == "fp32" else hashlib.sha256(f"{sha256}/{precision}".encode()).hexdigest()
    return {"name": MODEL_NAME, "sha256": sha256, "precision": precision, "id": model_id}


def load_model(settings: Settings) -> Model:
    path = Path(settings.model_path) if settings.model_path else packaged_model_path()
    sha256 = verify_sha256(path)
    if settings.precision == "bf16":
        return _load_bf16(settings, path, sha256)
    ort = _import_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = settings.inference_thread_count
    options.inter_op_num_threads = 1
    # Spinning inference threads would steal the cores the decode pool needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = choose_providers(settings.providers, ort.get_available_providers())
    if CUDA in providers:
        _preload_cuda_libraries(ort)
    session = ort.InferenceSession(str(path), sess_options=options,
                                   providers=provider_options(providers, settings))
    # onnxruntime falls back to the CPU when a provider fails to start; a provider asked for by name must not.
    if settings.providers and session.get_providers()[0] != providers[0]:
        raise ModelError(f"provider {providers[0]} did not start (onnxruntime runs on {session.get_providers()}); "
                         "its reason is in onnxruntime's log above")
    provider = session.get_providers()[0]
    return Model(
        session=session,
        input_name=session.get_inputs()[0].name,
        sha256=sha256,
        provider=provider,
        identity=model_identity(sha256, "fp32"),
        fixed_batch=settings.max_batch if provider == CUDA else 0,
    )


def _load_bf16(settings: Settings, path: Path, sha256: str) -> Model:
    if why := bf16.bf16_refusal():
        raise ModelError(why)
    try:
        session, input_name = bf16.compile_model(path, settings.inference_run_count,
                                                 settings.inference_thread_count)
    except RuntimeError as exc:
        raise ModelError(f"OpenVINO cannot run the model in bf16: {exc}") from None
    return Model(session=session, input_name=input_name, sha256=sha256, provider=bf16.PROVIDER,
                 identity=model_identity(sha256, "bf16"))
