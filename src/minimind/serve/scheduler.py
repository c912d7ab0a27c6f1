"""Continuous batching: one thread owns the engine and decodes every running request in one batch.

    HTTP handlers ─ submit(ticket) ─▶ inbox ─▶ scheduler thread, each turn: admit waiting tickets (one prefill
                                                group), run one forward of their prefill, step the batch, hand each
                                                row's Delta to its ticket's asyncio queue

Requests join the running batch between steps and leave it when they finish or are cancelled (a client that
disconnects), so a long reply never holds up a short one and the event loop never waits on the model. While rows
are decoding, a new group's prompts are prefilled PREFILL_TOKENS at a time, one forward per step, so a long prompt
delays each running stream's next token by one such forward instead of stalling it for the whole prompt.
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

    def _run(self) -> None:
        batch, waiting = None, deque()
        prefill, joining, dropped = None, [], set()      # the admitted group's prefill, its tickets, those cancelled
        while True:
            block = not batch and not waiting and not prefill
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
                elif ticket in joining:
                    dropped.add(ticket)
                elif batch:
                    batch.cancel(ticket)
            if not prefill and waiting:
                room = self.max_rows - (len(batch) if batch else 0)
                while waiting and (waiting[0].params.n <= room or (not joining and not batch)):
                    room -= waiting[0].params.n
                    joining.append(waiting.popleft())
                if joining:                                      # in pieces only when rows are decoding meanwhile
                    chunk = max(16, PREFILL_TOKENS // len(joining)) if batch else None
                    prefill = self.engine.prefill([t.prompt for t in joining], [t.params for t in joining],
                                                  handles=joining, images=[t.images for t in joining],
                                                  audios=[t.audios for t in joining], chunk=chunk)
            if prefill:
                try:
                    ready = next(prefill)
                except Exception as error:                  # noqa: BLE001 — reported to the group's requests
                    for ticket in joining:
                        ticket.deliver(error)
                    prefill, joining, dropped = None, [], set()
                else:
                    if ready is not None:
                        batch = ready if not batch else (batch.extend(ready) or batch)
                        for ticket in dropped:
                            batch.cancel(ticket)
                        prefill, joining, dropped = None, [], set()
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
