"""`nsfwoid score`'s progress: the counts of a run, a bar or periodic lines, and the summary."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import IO

from tqdm import tqdm


def counted(count: int, noun: str) -> str:
    """"1 error", "2 errors"."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


@dataclass
class Tally:
    started: float = field(default_factory=time.monotonic)
    total: int | None = None  # the targets selected, once counted
    scored: int = 0
    duplicates: int = 0  # scored as identical bytes seen earlier in the run
    skipped: int = 0  # finished in an earlier run (--resume)
    retried: int = 0  # failed in an earlier run, and tried again (--resume)
    below: int = 0  # scored under --min-score, so not written
    errors: collections.Counter = field(default_factory=collections.Counter)

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    @property
    def done(self) -> int:
        return self.scored + self.failed + self.skipped

    def rate(self) -> float:
        return (self.scored + self.failed) / max(time.monotonic() - self.started, 1e-9)

    def eta(self) -> str | None:
        """The time left, as H:MM:SS, once the total is known and something was done."""
        rate = self.rate()
        if self.total is None or rate <= 0:
            return None
        seconds = int(max(self.total - self.done, 0) / rate)
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

    def summary(self) -> str:
        # "58 of 203 targets" for a run that stopped before the end.
        of = f" of {self.total}" if self.total is not None and self.done < self.total else ""
        line = (f"nsfwoid: {self.done}{of} target{'' if self.done == 1 and not of else 's'}: {self.scored} scored "
                f"({self.duplicates} identical to an earlier one), {self.failed} failed, {self.skipped} skipped as "
                f"already done")
        if self.retried:
            line += f", {self.retried} tried again after failing before"
        line += f"; {self.rate():.1f}/s"
        if self.below:
            line += f"; {self.below} under --min-score not written"
        if self.errors:
            line += "; errors: " + ", ".join(f"{name} {count}" for name, count in self.errors.most_common())
        return line


class Progress:
    """A progress bar on a terminal (tqdm); elsewhere a line every few seconds. Both show a total and an ETA once
    the targets are counted. Targets skipped as done earlier (--resume) come off the bar's total, apart from its
    count and rate: thousands skipped in a moment would make tqdm's rate absurd, and its redraws rare."""

    def __init__(self, tally: Tally, stream: IO[str], every: float) -> None:
        self.tally, self.stream, self.every = tally, stream, every
        self.bar = tqdm(total=tally.total, unit="img", file=stream, dynamic_ncols=True) if stream.isatty() else None
        self.last_line = time.monotonic()

    def set_total(self, total: int | None) -> None:
        self.tally.total = total
        if self.bar is not None and total is not None:
            self.bar.total = total - self.tally.skipped
            self.bar.refresh()

    def update(self, skipped: bool = False) -> None:
        """One target more is done; `skipped`: as done in an earlier run."""
        if self.bar is not None:
            if not skipped:
                self.bar.update(1)
            elif self.bar.total is not None:
                self.bar.total -= 1
            self.bar.set_postfix(skipped=self.tally.skipped, errors=self.tally.failed, refresh=not skipped)
        elif time.monotonic() - self.last_line >= self.every:
            self.last_line = time.monotonic()
            tally = self.tally
            of = f"/{tally.total}" if tally.total is not None else ""
            eta = f", ETA {eta}" if (eta := tally.eta()) else ""
            print(f"nsfwoid: progress: {tally.done}{of} targets, {tally.rate():.1f}/s, "
                  f"{counted(tally.failed, 'error')}{eta}", file=self.stream, flush=True)

    def message(self, text: str) -> None:
        """A line on stderr that does not tear the bar."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
