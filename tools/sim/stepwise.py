"""The reference engine: the same model as `tools.sim.engine`, stepped one iteration at a time.

Written to be obviously right rather than fast: every iteration rebuilds the batch from each
sequence's own state and recomputes the iteration's cost from scratch. It exists to check the
event-driven engine (identical per-request results, `tests/test_sim_engine.py`) and to measure
how much the event-driven one saves (`benchmarks/bench_sim.py`).
"""

from __future__ import annotations

from collections import deque

from tools.sim.engine import (
    DONE,
    ERROR,
    OK,
    REJECTED,
    WAITING,
    Done,
    PrefixCache,
    Requests,
    prefill_tokens,
)
from tools.sim.spec import EngineSpec

PREFILLING, DECODING = 2, 3


class _Seq:
    __slots__ = ("chunk", "done", "gen", "phase", "r", "remaining")

    def __init__(self, r: int, remaining: int, done: int) -> None:
        self.r = r
        self.remaining = remaining
        self.done = done
        self.gen = 0
        self.chunk = 0
        self.phase = PREFILLING


class StepEngine:
    """Same interface as `EventEngine`; `next_ps` is always the end of the current iteration."""

    def __init__(self, spec: EngineSpec, req: Requests, on_done: Done) -> None:
        self.spec = spec
        self.req = req
        self.on_done = on_done
        self.factor = 1.0
        self.cache = PrefixCache(spec.kv_capacity_tokens // req.block) if req.prefix else None
        self._reset()

    def _reset(self) -> None:
        self.waiting: deque[int] = deque()
        self.running: list[_Seq] = []
        self.kv_used = 0
        self.removals: set[int] = set()
        self.busy = False
        self.frozen = False
        self.failing = False
        self.next_ps = -1

    def snapshot(self) -> tuple[int, int, float]:
        req = self.req
        waiting = sum(1 for r in self.waiting if req.state[r] == WAITING)
        return len(self.running), waiting, self.kv_used / self.spec.kv_capacity_tokens

    def arrive(self, r: int, t: int) -> None:
        req = self.req
        if self.failing:
            req.state[r] = DONE
            self.on_done(r, t, ERROR)
            return
        waiting = sum(1 for x in self.waiting if req.state[x] == WAITING)
        too_long = req.inp[r] + req.out[r] > self.spec.kv_capacity_tokens
        if waiting >= self.spec.max_waiting or too_long:
            req.state[r] = DONE
            self.on_done(r, t, REJECTED if waiting >= self.spec.max_waiting else ERROR)
            return
        self.waiting.append(r)
        req.state[r] = WAITING
        if not self.busy and not self.frozen:
            self._start(t)

    def abort(self, r: int, t: int) -> None:
        req = self.req
        if req.state[r] == WAITING:
            req.state[r] = DONE
        elif any(s.r == r for s in self.running):
            self.removals.add(r)

    def set_factor(self, factor: float, t: int) -> None:
        self.factor = factor

    def fail(self, mode: int, t: int) -> None:
        if mode == 0:
            self.frozen = True
            self.busy = False
            self.next_ps = -1
            return
        self._drop_all(t)
        self.failing = True

    def recover(self, t: int) -> None:
        if self.frozen:
            self._drop_all(t)
        self.failing = False

    def _drop_all(self, t: int) -> None:
        req = self.req
        lost = {r for r in self.waiting if req.state[r] == WAITING}
        lost |= {s.r for s in self.running}
        for r in sorted(lost):
            req.state[r] = DONE
            self.on_done(r, t, ERROR)
        if self.cache is not None:
            self.cache.blocks.clear()
        self._reset()

    def boundary(self, t: int) -> None:
        """The iteration that ends at `t` is over: apply it, then start the next one."""
        req = self.req
        still = []
        for s in self.running:
            if s.phase == DECODING:
                s.gen += 1
            elif s.chunk:
                s.remaining -= s.chunk
                s.done += s.chunk
                if s.remaining == 0:
                    s.phase = DECODING
                    s.gen = 1
                    req.first_ps[s.r] = t
            if s.phase == DECODING and s.gen == req.out[s.r]:
                req.state[s.r] = DONE
                req.done_ps[s.r] = t
                self.kv_used -= req.inp[s.r] + req.out[s.r]
                self.on_done(s.r, t, OK)
            else:
                still.append(s)
        kept = []
        for s in still:
            if s.r in self.removals:
                req.state[s.r] = DONE
                self.kv_used -= req.inp[s.r] + req.out[s.r]
            else:
                kept.append(s)
        self.removals = set()
        self.running = kept
        self._start(t)

    def _start(self, t: int) -> None:
        """Build the next iteration's batch at `t` and set when it ends."""
        if self.frozen:
            self.busy = False
            self.next_ps = -1
            return
        req = self.req
        spec = self.spec
        budget = spec.max_num_batched_tokens
        tokens = 0
        ctx = 0
        pairs = 0
        for s in self.running:
            s.chunk = 0
            if s.phase == DECODING:
                budget -= 1
                tokens += 1
                ctx += req.inp[s.r] + s.gen
        for s in self.running:
            if s.phase == PREFILLING and budget > 0:
                s.chunk = min(s.remaining, budget)
                budget -= s.chunk
                tokens += s.chunk
                pairs += s.chunk * s.done + s.chunk * s.chunk // 2
        while budget > 0 and len(self.running) < spec.max_num_seqs:
            while self.waiting and req.state[self.waiting[0]] != WAITING:
                self.waiting.popleft()
            if not self.waiting:
                break
            r = self.waiting[0]
            need = req.inp[r] + req.out[r]
            if self.kv_used + need > spec.kv_capacity_tokens:
                break
            self.waiting.popleft()
            self.kv_used += need
            req.state[r] = PREFILLING
            rem = prefill_tokens(req, r, self.cache)
            s = _Seq(r, rem, req.inp[r] - rem)
            s.chunk = min(rem, budget)
            budget -= s.chunk
            tokens += s.chunk
            pairs += s.chunk * s.done + s.chunk * s.chunk // 2
            self.running.append(s)
        if tokens == 0:
            self.busy = False
            self.next_ps = -1
            return
        c0, ct, cc, cp = spec.coefficients_ps(self.factor)
        self.busy = True
        self.next_ps = t + c0 + ct * tokens + cc * ctx + cp * pairs
