"""One LLM inference engine with continuous batching, simulated from event to event.

The model (the same one `tools.sim.stepwise` steps iteration by iteration; `tests/test_sim_engine`
checks that both give identical per-request results):

* Requests wait in a FIFO queue. At each iteration boundary the scheduler builds the next batch
  as vLLM's chunked-prefill scheduler does (Sarathi-Serve's stall-free batching): every running
  sequence that has finished its prefill decodes one token; sequences still in prefill take
  chunks of the remaining token budget (`max_num_batched_tokens`) in admission order; then
  waiting requests are admitted in order while the budget, the running-sequence cap
  (`max_num_seqs`) and the KV cache allow. A request reserves its prompt plus output tokens of
  KV; the head of the queue that does not fit blocks the rest (first come, first served). With
  prefix hashes, blocks already in the engine's prefix cache (LRU, as large as the KV cache)
  skip their prefill.
* An iteration takes `tools.sim.spec`'s cost model in integer picoseconds, times the backend's
  current slowdown factor. When a sequence's prefill completes, its first token is out at the end
  of that iteration; it then decodes one token per iteration and finishes with its last.
* Arrivals, aborts (the router timed out) and slowdowns take effect at the first iteration
  boundary at or after their time; an idle engine starts an iteration at once.

Between events the batch keeps its composition, so iteration k of a run of iterations lasts
A + S k exactly (decode contexts grow by one token per sequence per iteration, the one ongoing
prefill chunk's attention by chunk^2), and the run's end time is a closed form. The engine
therefore jumps from event to event: a request joining, a prefill finishing or changing chunk,
a sequence finishing, an external change; never stepping the iterations in between. The
iteration that completes every prefill in flight and the decode run after it are one run when
nothing else would end it there (`_plan_head`).
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict, deque
from collections.abc import Callable

from tools.sim.spec import EngineSpec

OK, TIMEOUT, ERROR, REJECTED = 0, 1, 2, 3
_NEVER = 1 << 62
NONE, WAITING, PREFILL, DECODE, DONE = 0, 1, 2, 3, 4


class Requests:
    """Per-request sizes and engine-side results, shared by the engines of one run (lists
    indexed by request id: the hot path reads them millions of times)."""

    __slots__ = ("block", "done_ps", "first_ps", "inp", "out", "prefix", "state")

    def __init__(
        self,
        inp: list[int],
        out: list[int],
        prefix: list[tuple[int, ...]] | None = None,
        block_tokens: int = 16,
    ) -> None:
        n = len(inp)
        self.inp = inp
        self.out = out
        self.prefix = prefix
        self.block = block_tokens
        self.first_ps = [-1] * n
        """Engine time the first token is out (-1: none). A run's head dates it up to one
        iteration ahead (`EventEngine._plan_head`): a reader at time t counts it only if < t."""
        self.done_ps = [-1] * n
        self.state = [NONE] * n


Done = Callable[[int, int, int], None]
"""on_done(request, time_ps, status): the engine finished with a request."""


class PrefixCache:
    """The engine's cache of prompt blocks (LRU by block hash), as vLLM's automatic prefix
    caching keeps the blocks of finished requests until the space is needed."""

    __slots__ = ("blocks", "capacity")

    def __init__(self, capacity_blocks: int) -> None:
        self.capacity = max(1, capacity_blocks)
        self.blocks: OrderedDict[int, None] = OrderedDict()

    def admit(self, hashes: tuple[int, ...]) -> int:
        """Blocks of `hashes` already cached (the longest cached prefix); caches them all."""
        blocks = self.blocks
        hit = 0
        for h in hashes:
            if h in blocks:
                hit += 1
            else:
                break
        for h in hashes:
            if h in blocks:
                blocks.move_to_end(h)
            else:
                blocks[h] = None
        while len(blocks) > self.capacity:
            blocks.popitem(last=False)
        return hit


def prefill_tokens(req: Requests, r: int, cache: PrefixCache | None) -> int:
    """Prompt tokens request r must compute on admission (at least one, as vLLM recomputes the
    last prompt token to produce the first output)."""
    n = req.inp[r]
    if cache is None or req.prefix is None:
        return n
    hashes = req.prefix[r]
    if not hashes:
        return n
    hit = cache.admit(hashes)
    return max(1, n - hit * req.block)


class EventEngine:
    """The event-driven engine (see the module docstring). The run loop calls `arrive`,
    `abort`, `set_factor`, `fail` and `recover` at their times and `boundary(next_ps)` when the
    engine's own next event comes; `next_ps` is -1 while the engine has nothing to do."""

    def __init__(self, spec: EngineSpec, req: Requests, on_done: Done) -> None:
        self.spec = spec
        self.req = req
        self.on_done = on_done
        self.B = spec.max_num_batched_tokens
        self.max_seqs = spec.max_num_seqs
        self.kv_cap = spec.kv_capacity_tokens
        self.max_waiting = spec.max_waiting
        self.factor = 1.0
        self.cur = spec.coefficients_ps(1.0)
        """The iteration cost coefficients at the current slowdown factor."""
        self.cache = PrefixCache(spec.kv_capacity_tokens // req.block) if req.prefix else None
        self._reset()
        self.next_ps = -1

    def _reset(self) -> None:
        self.waiting: deque[int] = deque()
        self.n_waiting = 0  # live entries in `waiting`
        self.running = 0
        self.kv_used = 0
        self.prefill: list[list[int]] = []  # [r, remaining, done, chunk] in admission order
        self.heap: list[tuple[int, int]] = []  # (finish iteration, r) of decoding sequences
        self.j_first: dict[int, int] = {}
        self.n_d = 0
        self.ctx_base = 0  # decode context sum at iteration i = ctx_base + n_d * i
        self.iters = 0
        self.busy = False
        self.frozen = False
        self.failing = False
        self.removals: list[int] = []
        self.seg_t0 = 0
        self.A = 0
        self.S = 0
        self.cut = 0
        self.budget_left = 0
        self.head_end = -1  # end of the run's head iteration while its effects are deferred
        self.head: list[int] = []  # the requests whose prefill completes in that head

    # -- what the router's scrapes and probes read ---------------------------------------------
    def snapshot(self) -> tuple[int, int, float]:
        """(running, waiting, KV-cache usage 0-1)."""
        return self.running, self.n_waiting, self.kv_used / self.kv_cap

    # -- external events -----------------------------------------------------------------------
    def arrive(self, r: int, t: int) -> None:
        req = self.req
        if self.failing:
            req.state[r] = DONE
            self.on_done(r, t, ERROR)
            return
        if req.inp[r] + req.out[r] > self.kv_cap or self.n_waiting >= self.max_waiting:
            # Longer than the KV cache can ever hold, or the queue is full: refused at once.
            req.state[r] = DONE
            self.on_done(r, t, REJECTED if self.n_waiting >= self.max_waiting else ERROR)
            return
        blocked = self.n_waiting > 0
        self.waiting.append(r)
        self.n_waiting += 1
        req.state[r] = WAITING
        if self.frozen:
            return
        if not self.busy:
            self._plan(t)
        elif t <= self.head_end:
            self._cut_at(t)  # the run's head must end it: the arrival may join after it
        elif (
            not blocked
            and self.budget_left > 0
            and self.running < self.max_seqs
            and self.kv_used + req.inp[r] + req.out[r] <= self.kv_cap
        ):
            self._cut_at(t)

    def abort(self, r: int, t: int) -> None:
        req = self.req
        st = req.state[r]
        if st == WAITING:
            req.state[r] = DONE
            self.n_waiting -= 1
            head = self._head()
            if self.busy and head is not None and head != r:
                self._cut_at(t)  # the next request may fit where this one did not
        elif st in (PREFILL, DECODE):
            self.removals.append(r)
            if self.busy:
                self._cut_at(t)

    def set_factor(self, factor: float, t: int) -> None:
        self.factor = factor
        self.cur = self.spec.coefficients_ps(factor)
        if self.busy:
            self._cut_at(t)

    def fail(self, mode: int, t: int) -> None:
        """Hang (mode 0: nothing more completes) or fail fast (mode 1: every request in the
        engine and every new one gets a 5xx)."""
        self._undo_head(t)
        if mode == 0:
            self.frozen = True
            self.busy = False
            self.next_ps = -1
            return
        self._drop_all(t)
        self.failing = True

    def _undo_head(self, t: int) -> None:
        """The run is interrupted at `t` without a boundary: a head that had not ended by then
        produced no first token. (After it, what it did is kept as a stepped engine keeps it:
        first tokens out, the requests still held, to be lost or finished with the engine.)"""
        if self.head_end >= 0:
            if t <= self.head_end:
                first_ps = self.req.first_ps
                for r in self.head:
                    first_ps[r] = -1
            self.head_end = -1
            self.head = []

    def recover(self, t: int) -> None:
        """The end of a failure: a hung engine restarts empty (what it held is lost)."""
        if self.frozen:
            self._drop_all(t)
        self.failing = False

    def _drop_all(self, t: int) -> None:
        req = self.req
        lost = [r for r in self.waiting if req.state[r] == WAITING]
        lost += [e[0] for e in self.prefill]
        lost += [r for _, r in self.heap if req.state[r] == DECODE]
        for r in sorted(set(lost)):
            req.state[r] = DONE
            self.on_done(r, t, ERROR)
        if self.cache is not None:
            self.cache.blocks.clear()
        self._reset()
        self.next_ps = -1

    # -- the engine's own events -----------------------------------------------------------------
    def boundary(self, t: int) -> None:
        """End of the run of iterations that ends at `t` (== next_ps)."""
        if self.head_end >= 0:
            # A run with a head: apply the head iteration (its prefills become decoders), then
            # the uniform tail, unless the run was cut at the head.
            self._head_done()
            tail = self.cut >= 0
        else:
            tail = True
        if tail:
            if self.prefill:
                self._advance(t)
            else:
                # Decode only (the common case, inlined): the run's iterations, then the
                # sequences finishing with its last one.
                last = self.iters + self.cut
                self.iters = last + 1
                heap = self.heap
                if heap and heap[0][0] <= last:
                    self._complete(t, last)
        if self.removals:
            self._apply_removals()
        if self.prefill or self.n_waiting or self.frozen:
            self._plan(t)
            return
        # Decode only again: the run lasts to the next completion.
        n_d = self.n_d
        if not n_d:
            self.busy = False
            self.next_ps = -1
            return
        heap = self.heap
        state = self.req.state
        while state[heap[0][1]] != DECODE:
            heapq.heappop(heap)
        c0, ct, cc, _ = self.cur
        iters = self.iters
        A = c0 + ct * n_d + cc * (self.ctx_base + n_d * iters)
        S = cc * n_d
        k = heap[0][0] - iters
        self.A = A
        self.S = S
        self.seg_t0 = t
        self.cut = k
        self.budget_left = self.B - n_d
        self.next_ps = t + (k + 1) * A + S * (k * (k + 1) // 2)

    def _head_done(self) -> None:
        """Account a run's head (`_plan_head`): one iteration after which every prefill in
        flight is complete (first tokens already dated) and decodes."""
        self.head_end = -1
        self.head = []
        last = self.iters
        self.iters = last + 1
        state, inp, out = self.req.state, self.req.inp, self.req.out
        j_first, heap = self.j_first, self.heap
        ctx = self.ctx_base
        for e in self.prefill:
            r = e[0]
            state[r] = DECODE
            j_first[r] = last
            heapq.heappush(heap, (last + out[r] - 1, r))
            ctx += inp[r] - last
        self.n_d += len(self.prefill)
        self.ctx_base = ctx
        self.prefill = []

    def _advance(self, t: int) -> None:
        """Account the run's `cut + 1` iterations ending at `t`: prefill progress, first tokens,
        completions."""
        req = self.req
        k = self.cut + 1
        iters = self.iters + k
        self.iters = iters
        last = iters - 1
        prefill = self.prefill
        if prefill:
            finished = None
            for e in prefill:
                c = e[3]
                if c:
                    e[1] -= c * k
                    e[2] += c * k
                    if e[1] == 0:
                        if finished is None:
                            finished = []
                        finished.append(e)
            if finished is not None:
                self.prefill = [e for e in prefill if e[1] > 0]
                first_ps, out, state, inp = req.first_ps, req.out, req.state, req.inp
                for e in finished:
                    r = e[0]
                    first_ps[r] = t
                    o = out[r]
                    if o == 1:
                        self._finish(r, t)
                        continue
                    state[r] = DECODE
                    self.j_first[r] = last
                    heapq.heappush(self.heap, (last + o - 1, r))
                    self.n_d += 1
                    self.ctx_base += inp[r] - last
        heap = self.heap
        if heap and heap[0][0] <= last:
            self._complete(t, last)

    def _complete(self, t: int, last: int) -> None:
        """The decoding sequences whose last token is iteration `last`'s, done at `t`."""
        req = self.req
        heap = self.heap
        state, inp, out, done_ps = req.state, req.inp, req.out, req.done_ps
        j_first, on_done, pop = self.j_first, self.on_done, heapq.heappop
        n = 0
        ctx = 0
        kv = 0
        while heap and heap[0][0] <= last:
            r = pop(heap)[1]
            if state[r] != DECODE:
                continue
            n += 1
            ctx += inp[r] - j_first.pop(r)
            kv += inp[r] + out[r]
            state[r] = DONE
            done_ps[r] = t
            on_done(r, t, OK)
        self.n_d -= n
        self.ctx_base -= ctx
        self.kv_used -= kv
        self.running -= n

    def _finish(self, r: int, t: int) -> None:
        req = self.req
        req.state[r] = DONE
        req.done_ps[r] = t
        self.kv_used -= req.inp[r] + req.out[r]
        self.running -= 1
        self.on_done(r, t, OK)

    def _apply_removals(self) -> None:
        req = self.req
        for r in self.removals:
            st = req.state[r]
            if st == DECODE:
                self.n_d -= 1
                self.ctx_base -= req.inp[r] - self.j_first.pop(r)
            elif st == PREFILL:
                self.prefill = [e for e in self.prefill if e[0] != r]
            else:
                continue
            req.state[r] = DONE
            self.kv_used -= req.inp[r] + req.out[r]
            self.running -= 1
        self.removals = []

    def _head(self) -> int | None:
        w = self.waiting
        state = self.req.state
        while w and state[w[0]] != WAITING:
            w.popleft()
        return w[0] if w else None

    def _plan(self, t: int) -> None:
        """Schedule the next run of iterations, starting at `t`."""
        if self.frozen:
            self.busy = False
            self.next_ps = -1
            return
        if self.n_waiting == 1 and not self.prefill and self.cache is None and self._admit_one(t):
            return
        n_d = self.n_d
        # (A decode-only run is planned by `boundary`; `arrive` always leaves one waiting.)
        budget = self.B - n_d
        tokens = n_d
        pairs = 0
        lim = None  # the budget-limited prefill entry, if any
        finishing = False
        for e in self.prefill:
            c = e[1] if e[1] < budget else budget
            e[3] = c
            if c:
                budget -= c
                tokens += c
                pairs += c * e[2] + c * c // 2
                if c == e[1]:
                    finishing = True
                else:
                    lim = e
        if budget > 0 and self.n_waiting:
            req = self.req
            inp, out, state = req.inp, req.out, req.state
            w = self.waiting
            running, kv_used = self.running, self.kv_used
            kv_cap, max_seqs = self.kv_cap, self.max_seqs
            cache = self.cache
            while budget > 0 and running < max_seqs:
                while w and state[w[0]] != WAITING:
                    w.popleft()
                if not w:
                    break
                r = w[0]
                need = inp[r] + out[r]
                if kv_used + need > kv_cap:
                    break
                w.popleft()
                self.n_waiting -= 1
                kv_used += need
                running += 1
                state[r] = PREFILL
                rem = inp[r] if cache is None else prefill_tokens(req, r, cache)
                c = rem if rem < budget else budget
                done = inp[r] - rem
                self.prefill.append([r, rem, done, c])
                budget -= c
                tokens += c
                pairs += c * done + c * c // 2
                if c == rem:
                    finishing = True
                else:
                    lim = self.prefill[-1]
            self.running, self.kv_used = running, kv_used
        if tokens == 0:
            self.busy = False
            self.next_ps = -1
            return
        c0, ct, cc, cp = self.cur
        iters = self.iters
        A = c0 + ct * tokens + cc * (self.ctx_base + n_d * iters) + cp * pairs
        slope = cc * n_d
        length = 1 if finishing else 0
        if lim is not None and not finishing:
            c = lim[3]
            length = lim[1] // c
            slope += cp * c * c
        heap = self.heap
        if heap:
            state = self.req.state
            while heap and state[heap[0][1]] != DECODE:
                heapq.heappop(heap)
            if heap:
                ld = heap[0][0] - iters + 1
                if length == 0 or ld < length:
                    length = ld
        if length == 0:  # cannot happen: tokens > 0 means a decode or a prefill is running
            raise AssertionError("a run of iterations with nothing to end it")
        if finishing and lim is None and not self.n_waiting and self._plan_head(t, A, heap):
            return
        self._start(t, A, slope, length - 1, budget)

    def _admit_one(self, t: int) -> bool:
        """`_plan` and `_plan_head` for their most common case, in one pass: no prefill in
        flight, one request waiting, and it is admitted whole (it fits the budget, the
        sequence cap and the KV cache, and has more than one token to decode) into a head
        that folds. False, with nothing admitted, when the case does not hold."""
        req = self.req
        state = req.state
        w = self.waiting
        while state[w[0]] != WAITING:
            w.popleft()
        r = w[0]
        n = req.inp[r]
        o = req.out[r]
        n_d = self.n_d
        if (
            o == 1
            or n > self.B - n_d
            or self.running >= self.max_seqs
            or self.kv_used + n + o > self.kv_cap
        ):
            return False
        heap = self.heap
        while heap and state[heap[0][1]] != DECODE:
            heapq.heappop(heap)
        iters = self.iters
        stop = iters + o - 1
        if heap and heap[0][0] < stop:
            stop = heap[0][0]
        if stop <= iters:  # a sequence finishes in the head: no fold
            return False
        w.popleft()
        self.n_waiting = 0
        self.kv_used += n + o
        self.running += 1
        state[r] = PREFILL
        self.prefill.append([r, n, 0, n])
        c0, ct, cc, cp = self.cur
        ctx = self.ctx_base
        head_end = t + c0 + ct * (n_d + n) + cc * (ctx + n_d * iters) + cp * (n * n // 2)
        req.first_ps[r] = head_end
        self.head = [r]
        self.head_end = head_end
        n_d += 1
        A = c0 + ct * n_d + cc * (ctx + n - iters + n_d * (iters + 1))
        self._start(head_end, A, cc * n_d, stop - iters - 1, self.B - n_d)
        return True

    def _start(self, t0: int, A: int, S: int, k: int, budget: int) -> None:
        """Run iterations 0..k from t0, iteration i lasting A + S i; `budget` tokens are left
        in each (an arrival that fits ends the run at the next boundary)."""
        self.A = A
        self.S = S
        self.seg_t0 = t0
        self.cut = k
        self.budget_left = budget
        self.busy = True
        self.next_ps = t0 + (k + 1) * A + S * (k * (k + 1) // 2)

    def _plan_head(self, t: int, A: int, heap: list[tuple[int, int]]) -> bool:
        """Fold the iteration that completes every prefill in flight (the run's head, lasting
        `A`) into one run with the decode-only iterations after it, when nothing else would end
        the run there: no request left waiting, no sequence finishing in the head. The head's
        first tokens are dated now (their time is known); its other effects wait for the
        boundary, and any event before the head's end cuts the run there, as without the fold."""
        req = self.req
        inp, out = req.inp, req.out
        iters = self.iters
        n_d = self.n_d
        ctx = self.ctx_base
        stop = heap[0][0] if heap else _NEVER  # the heap's top is live (cleaned by `_plan`)
        head = []
        for e in self.prefill:
            r = e[0]
            o = out[r]
            if e[3] != e[1] or o == 1:
                return False
            head.append(r)
            ctx += inp[r] - iters
            if iters + o - 1 < stop:
                stop = iters + o - 1
        length = stop - iters  # decode iterations after the head, to the first completion
        if length < 1:
            return False
        n_d += len(head)
        c0, ct, cc, _ = self.cur
        head_end = t + A
        first_ps = req.first_ps
        for r in head:
            first_ps[r] = head_end
        self.head = head
        self.head_end = head_end
        A2 = c0 + ct * n_d + cc * (ctx + n_d * (iters + 1))
        self._start(head_end, A2, cc * n_d, length - 1, self.B - n_d)
        return True

    def _cut_at(self, t: int) -> None:
        """End the current run at the first iteration boundary at or after `t`."""
        if t <= self.head_end:
            k = -1  # the run's head (`_plan_head`)
        else:
            t0 = self.seg_t0
            if t <= t0:
                k = 0
            else:
                A, S = self.A, self.S
                d = t - t0
                if S == 0:
                    k = -(-d // A) - 1
                else:
                    # The smallest k with (k + 1) A + S k (k + 1) / 2 >= d, from the root of
                    # the quadratic, then made exact in integers.
                    b = A + S / 2.0
                    disc = b * b + 2.0 * S * (d - A)
                    k = max(0, math.ceil((-b + math.sqrt(max(disc, 0.0))) / S))
                    while k > 0 and k * A + S * (k * (k - 1) // 2) >= d:
                        k -= 1
                    while (k + 1) * A + S * (k * (k + 1) // 2) < d:
                        k += 1
        if k < self.cut:
            self.cut = k
            self.next_ps = self.seg_t0 + (k + 1) * self.A + self.S * (k * (k + 1) // 2)
