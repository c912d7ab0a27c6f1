"""The scheduler thread: a long prompt arriving while a stream decodes is prefilled a forward at a time between
the stream's steps, a short prompt arriving after it does not wait for it, and every reply is what its request gets
alone."""

import asyncio
from itertools import pairwise

import torch

from minimind.infer import Engine, SamplingParams
from minimind.serve.scheduler import PREFILL_TOKENS, Scheduler, Ticket
from minimind.tokenizer import load_tokenizer
from tests.conftest import make_model


async def reply(ticket: Ticket, firsts: list) -> list[int]:
    tokens = []
    while (delta := await ticket.queue.get()) is not None:
        if isinstance(delta, Exception):
            raise delta
        if not tokens:
            firsts.append(ticket)
        tokens.append(delta.token_id)
    return tokens


def test_a_long_prompt_is_prefilled_between_the_steps_of_a_running_stream_and_a_short_one_overtakes_it():
    torch.manual_seed(0)
    model, tokenizer = make_model("tiny"), load_tokenizer()
    engine = Engine(model, tokenizer)
    short, long = [1, 400, 2000], [1] + torch.randint(2, 6000, (4 * PREFILL_TOKENS + 50,)).tolist()
    stream = SamplingParams(max_new_tokens=40, temperature=0, ignore_eos=True)
    brief = SamplingParams(max_new_tokens=3, temperature=0, ignore_eos=True)
    quick = [1, 900, 12, 3000]
    alone = [engine.generate([short], stream)[0][0].token_ids, engine.generate([long], brief)[0][0].token_ids,
             engine.generate([quick], brief)[0][0].token_ids]

    events = []
    forward, decode_step = model.forward, model.decode_step
    model.forward = lambda input_ids, **kw: events.append(("prefill", input_ids.shape)) or forward(input_ids, **kw)
    model.decode_step = lambda *args: events.append(("decode", args[0].shape)) or decode_step(*args)
    scheduler = Scheduler(engine)
    scheduler.start()

    async def serve() -> list[list[int]]:
        loop = asyncio.get_running_loop()
        running = Ticket(short, stream, loop)
        scheduler.submit(running)
        first = await running.queue.get()                    # it is decoding: the long prompt arrives meanwhile
        arriving, after = Ticket(long, brief, loop), Ticket(quick, brief, loop)
        scheduler.submit(arriving)
        scheduler.submit(after)
        firsts = []
        rest, *others = await asyncio.gather(reply(running, []), reply(arriving, firsts), reply(after, firsts))
        assert firsts == [after, arriving]                   # the short prompt's first token came first
        return [[first.token_id] + rest, *others]

    try:
        replies = asyncio.run(serve())
    finally:
        scheduler.stop()
    assert replies == alone
    pieces = [i for i, (kind, shape) in enumerate(events) if kind == "prefill" and shape[1] > len(quick)]
    assert [events[i][1][1] for i in pieces] == [PREFILL_TOKENS] * 4 + [51]
    assert all(any(kind == "decode" for kind, _ in events[i:j]) for i, j in pairwise(pieces))  # a step between each
    assert ("prefill", (1, len(quick))) in events[pieces[0]:pieces[-1]]       # the short prompt, in one forward
