"""The scheduler thread: a long prompt arriving while a stream decodes is prefilled a forward at a time between
the stream's steps, and both replies are what each request gets alone."""

import asyncio

import torch

from minimind.infer import Engine, SamplingParams
from minimind.serve.scheduler import PREFILL_TOKENS, Scheduler, Ticket
from minimind.tokenizer import load_tokenizer
from tests.conftest import make_model


async def reply(ticket: Ticket) -> list[int]:
    tokens = []
    while (delta := await ticket.queue.get()) is not None:
        if isinstance(delta, Exception):
            raise delta
        tokens.append(delta.token_id)
    return tokens


def test_a_long_prompt_is_prefilled_between_the_steps_of_a_running_stream():
    torch.manual_seed(0)
    model, tokenizer = make_model("tiny"), load_tokenizer()
    engine = Engine(model, tokenizer)
    short, long = [1, 400, 2000], [1] + torch.randint(2, 6000, (4 * PREFILL_TOKENS + 50,)).tolist()
    stream = SamplingParams(max_new_tokens=40, temperature=0, ignore_eos=True)
    brief = SamplingParams(max_new_tokens=3, temperature=0, ignore_eos=True)
    alone = [engine.generate([short], stream)[0][0].token_ids, engine.generate([long], brief)[0][0].token_ids]

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
        arriving = Ticket(long, brief, loop)
        scheduler.submit(arriving)
        rest, other = await asyncio.gather(reply(running), reply(arriving))
        return [[first.token_id] + rest, other]

    try:
        replies = asyncio.run(serve())
    finally:
        scheduler.stop()
    assert replies == alone
    pieces = [i for i, (kind, shape) in enumerate(events) if kind == "prefill" and shape[0] == 1 and shape[1] > 3]
    assert [events[i][1][1] for i in pieces] == [PREFILL_TOKENS] * 4 + [51]
    assert all(events[i + 1][0] == "decode" for i in pieces[:-1])        # the stream stepped after every piece
