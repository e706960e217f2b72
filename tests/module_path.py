"""The modules a request or a target passes through, in order: how many stops, and how many returns into a
module the path had already left.

Each function of nsfwoid that is *called* on the event loop by the traced task, or by a task it starts, is a stop
in its module (a coroutine resumed after an await is the same call, not a new one); consecutive calls in one
module are one stop. The decode workers, the threads (the batcher's inference), the event loop's callbacks (a
transport feeding aiohttp's parser) and the app's own tasks are not on the path: the path is what the caller's
code runs.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "nsfwoid"
# Set in the traced task, and so in every task it starts (a task copies its creator's context).
ON_PATH = contextvars.ContextVar("on_path", default=False)
# Frames of their own that are part of the function around them.
COMPREHENSIONS = frozenset({"<genexpr>", "<listcomp>", "<dictcomp>", "<setcomp>", "<module>"})


@dataclass
class ModulePath:
    stops: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)  # module.function of every call, for a reader of a failure
    _frames: list = field(default_factory=list)  # held, so that a frame's id is never reused while tracing
    _seen: set[int] = field(default_factory=set)

    @property
    def returns(self) -> int:
        """How many times the path comes back into a module it has already left."""
        return sum(stop in self.stops[:index] for index, stop in enumerate(self.stops))

    @property
    def modules(self) -> int:
        return len(set(self.stops))

    def describe(self) -> str:
        return (f"{self.modules} modules, {len(self.stops)} stops, {self.returns} returns: "
                + " → ".join(self.stops) + "\ncalls: " + ", ".join(self.calls))

    def _profile(self):
        def profile(frame, event, arg) -> None:
            if event != "call" or id(frame) in self._seen:
                return
            filename = Path(frame.f_code.co_filename)
            if PACKAGE not in filename.parents or frame.f_code.co_name in COMPREHENSIONS:
                return
            if not ON_PATH.get() or asyncio.current_task() is None:  # a loop callback (a transport's), no step
                return
            self._seen.add(id(frame))
            self._frames.append(frame)
            module = ".".join(filename.relative_to(PACKAGE.parent).with_suffix("").parts)
            self.calls.append(f"{module}.{frame.f_code.co_qualname}")
            if not self.stops or self.stops[-1] != module:
                self.stops.append(module)
        return profile

    async def follow(self, coroutine):
        """Run the coroutine as a task of its own, tracing the calls it and the tasks it starts make; its result."""
        context = contextvars.copy_context()
        context.run(ON_PATH.set, True)
        task = asyncio.get_running_loop().create_task(coroutine, context=context)
        previous = sys.getprofile()
        sys.setprofile(self._profile())
        try:
            return await task
        finally:
            sys.setprofile(previous)
