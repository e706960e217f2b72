"""`nsfwoid score ARGS` that also writes its stage counters (nsfwoid_stage_cpu_seconds_total, which the CLI
counts as the service does but does not export) to FILE, as JSON, every 0.2 s and once more as it ends: bench.py's
account of `nsfwoid score` reads them beside the run's thread CPU times.

    python score_with_stages.py FILE score ARGS...
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

from nsfwoid import cli, metrics


def stage_seconds() -> dict[str, float]:
    return {sample.labels["stage"]: sample.value for family in metrics.STAGE_CPU.collect()
            for sample in family.samples if sample.name.endswith("_total")}


def write(path: Path) -> None:
    written = path.with_name(path.name + ".tmp")
    written.write_text(json.dumps(stage_seconds()))
    written.replace(path)


def write_every(path: Path, seconds: float) -> None:
    while True:
        write(path)
        time.sleep(seconds)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    threading.Thread(target=write_every, args=(out, 0.2), daemon=True).start()
    try:
        cli.main(sys.argv[2:])
    finally:
        write(out)
