"""bench.py's measurements on a GPU: the CUDA ceiling, what TF32 and fp16 do to speed and to scores, and the
service in layouts of several processes that share the one GPU, each pinned to its own share of the cores.

The model runs on the GPU, but every image is still decoded on a CPU core: with enough images in flight,
the cores bound the service, not the GPU. `cpu_bound` says where.
"""

from __future__ import annotations

import os

# Before onnxruntime loads, in this process and every child it starts (peer library, ceiling sessions, services).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import dataclasses
import itertools
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
from common import Service, batch_of, image_posts, images_per_s, measured_load, run_for

from nsfwoid.config import Settings
from nsfwoid.scoring.model import CUDA, Model, load_model, packaged_model_path, provider_options
from tests import reference

BATCHES = (1, 8, 16, 32, 64, 128, 256)
CONCURRENCY = (16, 64, 256)
REQUESTS = {"thumbs": 4096, "camera": 256, "png": 512}
PROCESSES = (1, 2, 4)
# Room for every request of the highest concurrency, in flight and being received.
SERVICE_ENV = {"NSFWOID_PROVIDERS": CUDA, "NSFWOID_MAX_INFLIGHT": "256", "NSFWOID_MAX_RECEIVING": "256",
               "NSFWOID_INFERENCE_RUNS": "1"}
FP16_ALLOWED = 0.005


def cuda_ceiling(tensors: list[np.ndarray], seconds: float) -> dict:
    """Prepared tensors straight into the service's CUDA session, at each batch size; at the best one, also
    through IO binding, from host memory and from tensors already on the GPU (the model alone, no copies).
    Then batches of changing size, as the micro-batcher makes them, taken as they come and at one fixed size."""
    model = dataclasses.replace(load_model(Settings(providers=(CUDA,))), fixed_batch=0)
    by_batch = {size: images_per_s(model, batch_of(tensors, size), seconds) for size in BATCHES}
    best = max(by_batch, key=by_batch.get)
    batch = batch_of(tensors, best)
    bound_host = round(_io_bound_rate(model, batch, seconds, "cpu"), 1)
    bound_device = round(_io_bound_rate(model, batch, seconds, "cuda"), 1)
    exhaustive = _session_model(packaged_model_path(), {"use_tf32": "0", "cudnn_conv_algo_search": "EXHAUSTIVE"})
    return {"provider": model.provider, "images_per_s_by_batch": by_batch, "best_batch": best,
            "io_binding_host_images_per_s": bound_host, "io_binding_device_images_per_s": bound_device,
            "exhaustive_algo_search_images_per_s": images_per_s(exhaustive, batch, seconds),
            "changing_batch_images_per_s": changing_batches(model, tensors, seconds),
            "images_per_s": max(by_batch[best], bound_host)}


def changing_batches(model: Model, tensors: list[np.ndarray], seconds: float) -> dict:
    """Images/s of batches of random size 1 to the service's max_batch: as they come, and each padded to
    max_batch (model.Model.fixed_batch, what the service does on CUDA)."""
    largest = Settings().max_batch
    sizes = np.random.default_rng(0).integers(1, largest + 1, 64)
    batches = [batch_of(tensors, int(size)) for size in sizes]
    return {name: _rate_over(dataclasses.replace(model, fixed_batch=fixed), batches, seconds)
            for name, fixed in (("as_they_come", 0), (f"padded_to_{largest}", largest))}


def _rate_over(model: Model, batches: list[np.ndarray], seconds: float) -> float:
    """Images/s of `model` on `batches` in turn, after one run of each, so that no first run of a size is timed."""
    for batch in batches:
        model.run(batch)
    cycle = itertools.cycle(batches)
    return round(run_for(seconds, lambda: len(model.run(next(cycle))))[0], 1)


def _io_bound_rate(model: Model, batch: np.ndarray, seconds: float, device: str) -> float:
    """Images/s through IO binding, with the input bound once in `device` memory and the output on the GPU."""
    session = model.session
    binding = session.io_binding()
    binding.bind_ortvalue_input(model.input_name, ort.OrtValue.ortvalue_from_numpy(batch, device, 0))
    binding.bind_output(session.get_outputs()[0].name, "cuda")

    def step() -> int:
        session.run_with_iobinding(binding)
        binding.copy_outputs_to_cpu()
        return len(batch)

    step()
    return run_for(seconds, step)[0]


def precision(best_batch: int, tensors: list[np.ndarray], seconds: float) -> dict:
    """Exact-mode fixture scores against the reference with TF32 off (the default) and on, and fp16 against
    fp32; with the images/s of each at the best batch size."""
    expected = reference.expected_scores()
    names = sorted(expected)
    fixtures = reference.fixture_tensors()
    batch = batch_of(tensors, best_batch)
    out, fp32 = {}, None
    for tf32 in (False, True):
        model = dataclasses.replace(load_model(Settings(providers=(CUDA,), tf32=tf32)), fixed_batch=0)
        scores = model.run(fixtures)
        fp32 = scores if not tf32 else fp32
        deviations = {name: float(abs(score - expected[name])) for name, score in zip(names, scores, strict=True)}
        out[f"tf32_{'on' if tf32 else 'off'}"] = {
            "max_abs_deviation": max(deviations.values()), "by_fixture": deviations,
            "within_1e-4": max(deviations.values()) <= 1e-4, "images_per_s": images_per_s(model, batch, seconds)}
    model = _fp16_model()
    scores = model.run(fixtures)
    deviations = {name: float(abs(a - b)) for name, a, b in zip(names, scores, fp32, strict=True)}
    out["fp16"] = {"max_abs_deviation_from_fp32": max(deviations.values()), "by_fixture": deviations,
                   f"within_{FP16_ALLOWED}": max(deviations.values()) <= FP16_ALLOWED,
                   "images_per_s": images_per_s(model, batch, seconds)}
    return out


def _fp16_model() -> Model:
    """The weights converted to fp16 (inputs and outputs kept fp32), with the service's CUDA options."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    converted = convert_float_to_float16(onnx.load(packaged_model_path()), keep_io_types=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fp16.onnx"
        onnx.save(converted, path)
        return _session_model(path, provider_options([CUDA], Settings())[0][1])


def _session_model(path: Path, cuda_options: dict[str, str]) -> Model:
    """Weights at `path` in a CUDA session with these provider options (the sha256 is not checked)."""
    session = ort.InferenceSession(str(path), providers=[(CUDA, cuda_options)])
    return Model(session=session, input_name=session.get_inputs()[0].name, sha256="unchecked", provider=CUDA,
                 identity={"name": "open_nsfw", "sha256": "unchecked"})


def cpu_bound(cores: int, decode_core_ms: dict[str, float], ceiling: float) -> dict:
    """Images/s if every core did nothing but decode, against the GPU ceiling: the lower one bounds the service."""
    out = {}
    for name, ms in decode_core_ms.items():
        decode = cores * 1000 / ms
        out[name] = {"decode_images_per_s": round(decode, 1), "bound_images_per_s": round(min(decode, ceiling), 1),
                     "bound_by": "decode" if decode < ceiling else "gpu"}
    return out


def service_runs(corpora: dict[str, list[bytes]]) -> dict:
    """For each number of processes P: P services, each pinned to cores/P cores, with one CUDA session each,
    behind the least-request spreader, at each concurrency."""
    cores = sorted(os.sched_getaffinity(0))
    results = {}
    for processes in PROCESSES:
        share = len(cores) // processes
        services = [Service(cpus=set(cores[i * share:(i + 1) * share]), **SERVICE_ENV) for i in range(processes)]
        layout = results[f"{processes}x{share}_cores"] = {}
        try:
            for name, corpus in corpora.items():
                layout[name] = {}
                for concurrency in CONCURRENCY:
                    row, statuses = measured_load(services, image_posts(corpus, REQUESTS[name]), concurrency)
                    layout[name][concurrency] = {**row, "statuses": statuses}
                    print(f"gpu {processes}x{share} {name:7s} c={concurrency:3d} {layout[name][concurrency]}",
                          flush=True)
        finally:
            for service in services:
                service.stop()
    return results


def best_layout(service: dict) -> dict:
    """Per corpus, the layout and concurrency that scored the most images per second."""
    out = {}
    for name in REQUESTS:
        rate, layout, concurrency = max((runs[name][c]["images_per_s"], layout, c)
                                        for layout, runs in service.items() for c in runs[name])
        out[name] = {"images_per_s": rate, "layout": layout, "concurrency": concurrency}
    return out

