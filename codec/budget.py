"""Time accounting of an encode: where the seconds go, and a training schedule that ends on time.

``Phases`` records the wall time of each phase of a fit (reported as ``stats["phase_seconds"]``).
``TrainSchedule`` drives the training loop: without a deadline it is the plain step count (the
same steps, learning rates and temperatures as before it existed); with one it advances the
schedule by elapsed time as well, so the cosine decay, the soft-rounding anneal and the short
hard-rounding phase all complete by the time the training share of the budget is spent, on
whatever machine and under whatever load the encode runs.
"""
from __future__ import annotations

import time
from typing import Callable


class Phases:
    """Wall seconds per named phase: ``p.mark("train")`` closes the phase running since the last mark."""

    def __init__(self) -> None:
        self.t = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def mark(self, name: str) -> float:
        now = time.perf_counter()
        dt = now - self.t
        self.seconds[name] = round(self.seconds.get(name, 0.0) + dt, 3)
        self.t = now
        return dt


class TrainSchedule:
    """Position of each training step in the schedule (a *virtual* step in ``[0, steps]``).

    ``deadline`` (``time.perf_counter()`` seconds) and ``reserve(step_seconds)`` (the seconds the
    phases after training will need, given the measured time of a training step) make the
    schedule time-driven: the position is the larger of the step count and the elapsed share of
    the time left for training. Training stops when the position reaches ``steps``.
    """

    def __init__(self, steps: int, hard_frac: float, deadline: float | None = None,
                 reserve: Callable[[float], float] | None = None, min_steps: int = 2) -> None:
        self.steps = int(steps)
        self.hard_from = int(round(self.steps * (1.0 - hard_frac)))
        self.deadline, self.reserve, self.min_steps = deadline, reserve, min_steps
        self.step_time: Callable[[], float] | None = None
        self.t0 = time.perf_counter()
        self.durations: list[float] = []
        self._last = self.t0
        self._pos = 0.0

    def step_seconds(self) -> float:
        """Median of the recent training steps (the first one, which allocates, left out when possible);
        with ``step_time`` set (a :class:`ThreadChoice`'s ``best_seconds``), what that says once known."""
        if self.step_time is not None and self.step_time() > 0:
            return self.step_time()
        d = self.durations[1:] if len(self.durations) > 2 else self.durations
        d = sorted(d[-20:])
        return d[len(d) // 2] if d else 0.0

    def pos(self, step: int) -> float:
        if self.deadline is None:
            self._pos = float(step)
            return self._pos
        now = time.perf_counter()
        spent = now - self.t0
        left = self.deadline - now - (self.reserve(self.step_seconds()) if self.reserve else 0.0)
        share = 1.0 if left <= 0 else spent / (spent + left)
        # never backwards (estimates move): the anneals and the hard phase only go forward
        self._pos = max(self._pos, float(step), self.steps * share if step >= self.min_steps else 0.0)
        return min(self._pos, float(self.steps))

    def expected_steps(self, step: int) -> float:
        """The number of steps training will take: ``steps``, or under a deadline the estimate from
        the position reached so far (``step`` steps done at position ``pos``)."""
        if self.deadline is None or step < self.min_steps or self._pos <= 0:
            return float(self.steps)
        return min(float(self.steps), self.steps * step / self._pos)

    def running(self, step: int) -> bool:
        if step >= self.steps:
            return False
        if self.deadline is None or step < self.min_steps:
            return True
        return self.pos(step) < self.steps

    def tick(self) -> None:
        """Call once at the end of every training step."""
        now = time.perf_counter()
        self.durations.append(now - self._last)
        self._last = now


class ThreadChoice:
    """The intra-op thread count of the training steps, chosen by measurement.

    On a machine shared with other work (a CI runner, a laptop, a cluster node), torch's ``n`` OpenMP
    threads wait for one another at every operation, and a core that is busy elsewhere stalls all
    of them: on the developers' 2-core machine a latent step on 64^3 took 0.25 s with 2 threads when
    the machine was idle, 2-8 s with 2 threads and 0.35-0.45 s with 1 thread when another process
    was running (model-latent.md, "Encode cost"). So the steps try both, keep the faster (median of
    the last ``keep`` steps of each) and try the other again every ``probe_every`` x (its time / the
    faster's) steps (load changes; a probe of a much slower count costs more, so it comes rarer).
    ``n = 1`` changes nothing.
    """

    #: steps 0..FIRST_STEPS-1 measure both counts (step 0 allocates and is not measured)
    FIRST_STEPS = 5

    def __init__(self, n: int, probe_every: int = 25, keep: int = 3) -> None:
        self.options = [n, 1] if n > 1 else [n]
        self.probe_every, self.keep = probe_every, keep
        self.times: dict[int, list[float]] = {o: [] for o in self.options}
        self.step = 0
        self.current = self.options[0]

    @property
    def tries_both(self) -> bool:
        return len(self.options) > 1

    def medians(self) -> dict[int, float]:
        """Median step seconds of each count measured so far."""
        return {o: sorted(t)[len(t) // 2] for o, t in self.times.items() if t}

    def best(self) -> int:
        med = self.medians()
        return min(med, key=med.get) if med else self.options[0]

    def best_seconds(self) -> float:
        """Median step time of the faster option, once every option has been measured (else 0)."""
        med = self.medians()
        return min(med.values()) if len(med) == len(self.options) else 0.0

    def choose(self) -> int:
        """The thread count of the next step (steps 0-2 use ``n`` threads, 3-4 one thread; then the
        faster, with a probe of the other now and then)."""
        i = self.step
        if not self.tries_both or i < 3:
            pick = self.options[0]
        elif i < self.FIRST_STEPS:
            pick = self.options[1]
        else:
            med = self.medians()
            pick = min(med, key=med.get)
            other = self.options[1] if pick == self.options[0] else self.options[0]
            # the slower the other count was, the rarer its probe (one probe costs ~ratio steps)
            ratio = med[other] / max(med[pick], 1e-9)
            if i % max(self.probe_every, int(self.probe_every * ratio)) == 0:
                pick = other
        self.current = pick
        return pick

    def record(self, seconds: float) -> None:
        """The seconds of the step just run (with the count :meth:`choose` gave)."""
        if self.step > 0:
            t = self.times[self.current]
            t.append(seconds)
            del t[:-self.keep]
        self.step += 1


class Budget:
    """A wall-time budget for a whole encode (``seconds`` from ``start``, ``time.perf_counter()``)."""

    def __init__(self, seconds: float, start: float | None = None) -> None:
        if not seconds > 0:
            raise ValueError("a time budget must be positive")
        self.seconds = float(seconds)
        self.start = time.perf_counter() if start is None else start
        self.deadline = self.start + self.seconds

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def part(self, share: float) -> "Budget":
        """A budget for the next ``share`` of the time left (from now)."""
        return Budget(max(1e-3, share * self.left()))

    def training(self, reserve: Callable[[float], float]) -> tuple[float, Callable[[float], float]]:
        """``TrainSchedule``'s deadline and reserve: training ends when what is left equals what the
        phases after it will take (``reserve(step_seconds)``), with a margin of a quarter of that
        and 5 % of the budget (estimates on a loaded machine are noisy)."""
        return self.deadline, lambda t: 1.25 * reserve(t) + 0.05 * self.seconds

    def report(self, progress, info: dict) -> None:
        """Progress of a budgeted encode in seconds of its budget (so a bar's ETA is the budget's)."""
        progress(min(self.seconds, round(time.perf_counter() - self.start, 1)), self.seconds, info)
