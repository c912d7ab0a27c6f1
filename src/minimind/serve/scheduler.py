"""Continuous batching: one thread owns the engine and decodes every running request in one batch.

    HTTP handlers ─ submit(ticket) ─▶ inbox ─▶ scheduler thread, each turn: admit waiting tickets (a group per
                                                lane), run one forward of each group's prefill, step the batch, hand
                                                each row's Delta to its ticket's asyncio queue

Requests join the running batch between steps and leave it when they finish or are cancelled (a client that
disconnects), so a long reply never holds up a short one and the event loop never waits on the model.

While rows are decoding, no forward of a prefill exceeds about PREFILL_TOKENS positions, one per lane per step, so a
new prompt delays each running stream's next token by one such forward instead of stalling it for the whole prompt.
Two lanes: short prompts (≤ PREFILL_TOKENS), in arrival order, in groups whose padded size fits one forward; and
long ones, one at a time in pieces. A short prompt never waits behind a long one's pieces, and left padding never
stretches a short prompt to a long one's length. With nothing decoding, every waiting prompt is prefilled at once.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections import deque

from minimind.infer import Engine, SamplingParams


class Ticket:
    """One request: its prompt and sampling values in; Deltas (then None when all rows are done, or an
    exception) out through an asyncio queue owned by the handler's event loop."""

    def __init__(self, prompt: list[int], params: SamplingParams, loop: asyncio.AbstractEventLoop,
                 images: list | None = None, audios: list | None = None):
        self.prompt, self.params, self.loop, self.images = prompt, params, loop, images or []
        self.audios = audios or []
        self.queue: asyncio.Queue = asyncio.Queue()
        self.running = params.n

    def deliver(self, item) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def __hash__(self) -> int:
        return id(self)


class Prefill:
    """A group of tickets being prefilled: the engine's prefill (one forward per `next`), and the tickets cancelled
    meanwhile (dropped once the group has joined the batch)."""

    def __init__(self, engine: Engine, tickets: list[Ticket], chunk: int | None):
        self.tickets, self.dropped = tickets, set()
        self.long = max(len(t.prompt) for t in tickets) > PREFILL_TOKENS
        self.forwards = engine.prefill([t.prompt for t in tickets], [t.params for t in tickets], handles=tickets,
                                       images=[t.images for t in tickets], audios=[t.audios for t in tickets],
                                       chunk=chunk)

    @property
    def rows(self) -> int:
        return sum(t.params.n for t in self.tickets)


PREFILL_TOKENS = 128        # prompt tokens per prefill forward while rows decode (~80 ms for minimind-3 on 2 cores)


class Scheduler:
    def __init__(self, engine: Engine, max_rows: int = 16):
        self.engine, self.max_rows = engine, max_rows
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="minimind-scheduler", daemon=True)
        self.running_rows = 0              # rows in the batch, read by /health

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.inbox.put(None)
        self.thread.join(timeout=10)

    def submit(self, ticket: Ticket) -> None:
        self.inbox.put(("add", ticket))

    def cancel(self, ticket: Ticket) -> None:
        self.inbox.put(("cancel", ticket))

    def _admit(self, waiting: deque, prefills: list[Prefill], batch) -> None:
        """Start the lanes' next groups from `waiting` (see the module's docstring), rows permitting."""
        decoding = bool(batch) or bool(prefills)
        room = self.max_rows - (len(batch) if batch else 0) - sum(p.rows for p in prefills)
        if not decoding:                                         # idle: everything that fits, in one forward
            group = []
            while waiting and (waiting[0].params.n <= room or not group):
                room -= waiting[0].params.n
                group.append(waiting.popleft())
            if group:
                prefills.append(Prefill(self.engine, group, None))
            return
        lanes = {p.long for p in prefills}
        short, longest = [], 0
        for ticket in list(waiting):
            n, length = ticket.params.n, len(ticket.prompt)
            if length > PREFILL_TOKENS:
                if True not in lanes and n <= room:              # the long lane: the first long prompt, alone
                    waiting.remove(ticket)
                    prefills.append(Prefill(self.engine, [ticket], PREFILL_TOKENS))
                    lanes.add(True)
                    room -= n
            elif False not in lanes and n <= room and (len(short) + 1) * max(longest, length) <= PREFILL_TOKENS:
                waiting.remove(ticket)
                short.append(ticket)
                longest = max(longest, length)
                room -= n
        if short:
            prefills.append(Prefill(self.engine, short, None))

    def _run(self) -> None:
        batch, waiting, prefills = None, deque(), []
        while True:
            block = not batch and not waiting and not prefills
            while True:                                          # drain the inbox (block only when idle)
                try:
                    item = self.inbox.get(block=block)
                except queue.Empty:
                    break
                if item is None:
                    return
                block = False
                kind, ticket = item
                if kind == "add":
                    waiting.append(ticket)
                elif ticket in waiting:
                    waiting.remove(ticket)
                elif joining := next((p for p in prefills if ticket in p.tickets), None):
                    joining.dropped.add(ticket)
                elif batch:
                    batch.cancel(ticket)
            self._admit(waiting, prefills, batch)
            for prefill in list(prefills):                       # one forward of each lane's group
                try:
                    ready = next(prefill.forwards)
                except Exception as error:                  # noqa: BLE001 — reported to the group's requests
                    for ticket in prefill.tickets:
                        ticket.deliver(error)
                    prefills.remove(prefill)
                    continue
                if ready is not None:
                    batch = ready if not batch else (batch.extend(ready) or batch)
                    for ticket in prefill.dropped:
                        batch.cancel(ticket)
                    prefills.remove(prefill)
            self.running_rows = len(batch) if batch else 0
            if batch:
                try:
                    for delta in batch.step():
                        ticket = delta.request
                        ticket.deliver(delta)
                        if delta.finish_reason is not None:
                            ticket.running -= 1
                            if ticket.running == 0:
                                ticket.deliver(None)
                except Exception as error:              # noqa: BLE001 — reported to every affected request
                    for ticket in {row.request.handle for row in batch.rows}:
                        ticket.deliver(error)
                    batch = None
