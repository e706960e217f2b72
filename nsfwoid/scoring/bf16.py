"""bf16 inference (NSFWOID_PRECISION=bf16) through OpenVINO, the optional extra nsfwoid[openvino].

bf16 runs natively only on processors with AVX-512 BF16 or AMX. Elsewhere OpenVINO would quietly run f32, so the
service and the CLI refuse to start instead: a bf16 score is another model, and an f32 score must never carry its
name. The inference precision is pinned whatever the processor: OpenVINO's own default is bf16 where AMX is.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import threading
from pathlib import Path

import numpy as np

CPUINFO = Path("/proc/cpuinfo")
# The processor flags, as Linux names them, of the instructions that run bf16 natively: either will do.
BF16_FLAGS = {"avx512_bf16": "AVX-512 BF16", "amx_bf16": "AMX"}
PROVIDER = "OpenVINO CPU"
# How far a bf16 score may be from the fp32 score of the same image, as a logit: 0.25 moves a score of 0.5 by
# 0.06, and one of 0.95 by 0.01. The start-up self-test holds bf16 to it, and tests/test_bf16.py every fixture.
MAX_LOGIT_DEVIATION = 0.25


def logit_deviation(score: float, reference: float) -> float:
    """|logit(score) − logit(reference)|."""
    return abs(math.log(score / (1 - score)) - math.log(reference / (1 - reference)))


def bf16_refusal(cpuinfo: Path = CPUINFO) -> str | None:
    """Why this machine cannot run NSFWOID_PRECISION=bf16, in one line; None when it can."""
    flags: set[str] = set()
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags.update(line.partition(":")[2].split())
    except OSError:
        pass
    if not flags & set(BF16_FLAGS):
        wanted = " or ".join(f"{name} ({flag})" for flag, name in BF16_FLAGS.items())
        return f"NSFWOID_PRECISION=bf16 needs a processor with {wanted}; this one has neither"
    if importlib.util.find_spec("openvino") is None:
        return "NSFWOID_PRECISION=bf16 runs on OpenVINO, which is not installed: install nsfwoid[openvino]"
    return None


class OpenVinoSession:
    """A compiled OpenVINO model behind onnxruntime's `run(output_names, feed)`, with one infer request per
    thread: the batcher's inference threads run at once."""

    def __init__(self, compiled) -> None:
        self._compiled = compiled
        self._requests = threading.local()

    def run(self, _output_names, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self._compiled.create_infer_request()
        (batch,) = feed.values()
        request.infer([batch])
        return [request.get_output_tensor(0).data.copy()]


def compile_model(path: Path, runs: int, threads_per_run: int) -> tuple[OpenVinoSession, str]:
    """The weights compiled for the CPU in bf16, pinned; the session and its input's name. Raises RuntimeError
    when OpenVINO would run another precision."""
    # `import openvino` imports its model converter, which sends an event to Google Analytics and writes an id
    # under $HOME/intel, unless its telemetry package cannot be imported: then it uses a stub that sends
    # nothing. This makes it so, for this process only; nothing of nsfwoid's uses the package.
    sys.modules.setdefault("openvino_telemetry", None)
    import openvino

    core = openvino.Core()
    model = core.read_model(str(path))
    compiled = core.compile_model(model, "CPU", {
        "INFERENCE_PRECISION_HINT": "bf16",
        "NUM_STREAMS": str(runs),
        "INFERENCE_NUM_THREADS": str(runs * threads_per_run),
    })
    running = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    if running != "bf16":
        raise RuntimeError(f"OpenVINO runs {running}, not bf16")
    return OpenVinoSession(compiled), model.inputs[0].get_any_name()
