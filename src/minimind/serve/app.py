"""`minimind serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) and the web chat page at `/`.

    GET  /health                 status, model, rows decoding now
    GET  /v1/models              the one model served
    POST /v1/chat/completions    chat (stream or not): reasoning_content, tool_calls, logprobs, usage
    POST /v1/completions         raw completion (base models)

Every error is an OpenAI error object: 400 bad JSON, bad values or a prompt over the context, 401 bad key,
404 unknown model, 413 body too large, 422 fields of the wrong type or missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError

from minimind.errors import MiniMindError
from minimind.infer import Engine
from minimind.serve.protocol import (
    ChatRequest,
    CompletionRequest,
    StreamSplitter,
    TokenText,
    error_body,
    new_id,
    tool_calls,
    usage,
)
from minimind.serve.scheduler import Scheduler, Ticket
from minimind.tokenizer import parse_output


class APIError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.body = status, error_body(message, kind, param, code)


def create_app(engine: Engine, model_name: str, api_key: str | None = None, cors_origins: list[str] = (),
               max_rows: int = 16, max_body_bytes: int = 1 << 20) -> FastAPI:
    scheduler = Scheduler(engine, max_rows=max_rows)
    tokenizer, context = engine.tokenizer, engine.model.config.max_position_embeddings
    token_text = TokenText(tokenizer)
    page = resources.files("minimind.serve").joinpath("static/index.html").read_text()
    created = int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(_):
        scheduler.start()
        yield
        scheduler.stop()

    app = FastAPI(title="MiniMind", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["*"],
                           allow_headers=["*"])

    @app.exception_handler(APIError)
    async def api_error(_, error: APIError):
        return JSONResponse(error.body, status_code=error.status)

    @app.exception_handler(404)
    async def not_found(request: Request, _):
        return JSONResponse(error_body(f"no route {request.method} {request.url.path}", code="not_found"), 404)

    @app.exception_handler(405)
    async def wrong_method(request: Request, _):
        return JSONResponse(error_body(f"{request.method} is not allowed on {request.url.path}"), 405)

    def authorize(request: Request) -> None:
        if api_key is not None and request.headers.get("authorization") != f"Bearer {api_key}":
            raise APIError(401, "invalid or missing API key (send 'Authorization: Bearer KEY')",
                           "authentication_error", code="invalid_api_key")

    async def read(request: Request, model: type[BaseModel]):
        authorize(request)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_body_bytes:
            raise APIError(413, f"request body over {max_body_bytes} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:
                raise APIError(413, f"request body over {max_body_bytes} bytes")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as e:
            raise APIError(400, f"the body is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise APIError(400, "the body must be a JSON object")
        try:
            parsed = model.model_validate(data)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise APIError(422, f"{where}: {first['msg']}", param=where) from None
        if parsed.model != model_name:
            raise APIError(404, f"model {parsed.model!r} does not exist; this server serves {model_name!r}",
                           param="model", code="model_not_found")
        return parsed

    def ticket_for(prompt: list[int], request, max_new_tokens: int | None, logprobs: int | None) -> Ticket:
        if len(prompt) >= context:
            raise APIError(400, f"the prompt has {len(prompt)} tokens; this model's context is {context} tokens",
                           param="messages", code="context_length_exceeded")
        params = request.sampling(max_new_tokens or context - len(prompt), logprobs)
        try:
            params.validate()
            engine.check_prompts([prompt])
        except MiniMindError as e:
            raise APIError(400, str(e)) from None
        return Ticket(prompt, params, asyncio.get_running_loop())

    async def deltas(ticket: Ticket, request: Request, poll_disconnect: bool):
        """The ticket's Deltas as they come; cancels its rows if the client goes away."""
        scheduler.submit(ticket)
        try:
            while True:
                try:
                    item = await asyncio.wait_for(ticket.queue.get(), timeout=0.5)
                except TimeoutError:
                    if poll_disconnect and await request.is_disconnected():
                        return
                    continue
                if item is None:
                    return
                if isinstance(item, Exception):
                    raise APIError(500, f"generation failed: {item}", "server_error")
                yield item
        finally:
            if ticket.running:
                scheduler.cancel(ticket)

    def sse(payload) -> str:
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    async def guarded(events):
        """A failure after the stream has started is sent as an error event (the status is already 200)."""
        try:
            async for event in events:
                yield event
        except APIError as error:
            yield sse(error.body)
            yield "data: [DONE]\n\n"

    # ---- routes -------------------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return page

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name, "rows_decoding": scheduler.running_rows}

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request)
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created,
                                             "owned_by": "minimind", "max_model_len": context}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body: ChatRequest = await read(request, ChatRequest)
        tools = [t.model_dump() for t in body.tools] if body.tools and body.tool_choice != "none" else None
        messages = [m.as_template() for m in body.messages]
        prefix = body.forced_prefix()
        try:
            prompt = engine.chat_prompt(messages, tools, body.thinking())
        except (KeyError, TypeError, ValueError) as e:
            raise APIError(400, f"messages cannot be rendered: {e}", param="messages") from None
        prompt += tokenizer.encode(prefix) if prefix else []
        logprobs = (body.top_logprobs or 0) if body.logprobs else None
        ticket = ticket_for(prompt, body, body.max_completion_tokens or body.max_tokens, logprobs)
        rid, now = new_id("chatcmpl"), int(time.time())
        head = {"id": rid, "object": "chat.completion.chunk", "created": now, "model": model_name}

        def finish_reason(reason: str, parsed) -> str:
            return "tool_calls" if parsed.tool_calls else reason

        if body.stream:
            async def events():
                splitters = [StreamSplitter(prefix) for _ in range(body.n)]
                texts, generated = [prefix] * body.n, 0
                for j in range(body.n):
                    yield sse(head | {"choices": [{"index": j, "delta": {"role": "assistant", "content": ""},
                                                   "logprobs": None, "finish_reason": None}]})
                async for d in deltas(ticket, request, poll_disconnect=False):
                    generated += 1
                    texts[d.index] += d.text
                    if d.finish_reason is None:
                        reasoning, content = splitters[d.index].feed(d.text)
                        parsed = None
                    else:
                        parsed = parse_output(texts[d.index])
                        reasoning, content = splitters[d.index].finish(parsed)
                    delta = {}
                    if reasoning:
                        delta["reasoning_content"] = reasoning
                    if content:
                        delta["content"] = content
                    lp = ({"content": [token_text.chat_entry(d.token_id, d.logprob, d.top_logprobs)]}
                          if d.logprob is not None else None)
                    if delta or lp:
                        yield sse(head | {"choices": [{"index": d.index, "delta": delta or {"content": ""},
                                                       "logprobs": lp, "finish_reason": None}]})
                    if parsed is not None:
                        calls = tool_calls(parsed)
                        if calls:
                            yield sse(head | {"choices": [{"index": d.index, "delta": {"tool_calls": [
                                c | {"index": k} for k, c in enumerate(calls)]}, "logprobs": None,
                                "finish_reason": None}]})
                        yield sse(head | {"choices": [{"index": d.index, "delta": {}, "logprobs": None,
                                                       "finish_reason": finish_reason(d.finish_reason, parsed)}]})
                if body.stream_options and body.stream_options.include_usage:
                    yield sse(head | {"choices": [], "usage": usage(len(prompt), generated)})
                yield "data: [DONE]\n\n"

            return StreamingResponse(guarded(events()), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

        rows = [[] for _ in range(body.n)]
        async for d in deltas(ticket, request, poll_disconnect=True):
            rows[d.index].append(d)
        choices = []
        for j, row in enumerate(rows):
            if not row:                                           # the client went away
                return JSONResponse(error_body("cancelled"), status_code=499)
            parsed = parse_output(prefix + "".join(d.text for d in row))
            message = {"role": "assistant", "content": parsed.content or (None if parsed.tool_calls else "")}
            if parsed.reasoning_content:
                message["reasoning_content"] = parsed.reasoning_content
            if parsed.tool_calls:
                message["tool_calls"] = tool_calls(parsed)
            lp = ({"content": [token_text.chat_entry(d.token_id, d.logprob, d.top_logprobs) for d in row]}
                  if logprobs is not None else None)
            choices.append({"index": j, "message": message, "logprobs": lp,
                            "finish_reason": finish_reason(row[-1].finish_reason, parsed)})
        return {"id": rid, "object": "chat.completion", "created": now, "model": model_name, "choices": choices,
                "usage": usage(len(prompt), sum(map(len, rows)))}

    @app.post("/v1/completions")
    async def completions(request: Request):
        body: CompletionRequest = await read(request, CompletionRequest)
        prompts = body.prompt
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        if not prompts:
            raise APIError(400, "empty prompt", param="prompt")
        ids = [[tokenizer.bos_id, *tokenizer.encode(p)] if isinstance(p, str) else list(p) for p in prompts]
        tickets = [ticket_for(p, body, body.max_tokens, body.logprobs) for p in ids]
        rid, now = new_id("cmpl"), int(time.time())
        head = {"id": rid, "object": "text_completion", "created": now, "model": model_name}
        echoes = [p if isinstance(p, str) else tokenizer.decode(p) for p in prompts] if body.echo else None

        def logprob_block(d_list, offset: int) -> dict:
            tokens, offsets = [], []
            for d in d_list:
                offsets.append(offset)
                text = token_text(d.token_id)[0]
                tokens.append(text)
                offset += len(text)
            return {"tokens": tokens, "token_logprobs": [d.logprob for d in d_list],
                    "top_logprobs": [{token_text(i)[0]: lp for i, lp in d.top_logprobs} for d in d_list],
                    "text_offset": offsets}

        if body.stream:
            async def events():
                generated, queue = 0, asyncio.Queue()

                async def pump(i, ticket):
                    async for d in deltas(ticket, request, poll_disconnect=False):
                        await queue.put((i, d))
                    await queue.put((i, None))

                tasks = [asyncio.create_task(pump(i, t)) for i, t in enumerate(tickets)]
                try:
                    if echoes:
                        for i, text in enumerate(echoes):
                            for j in range(body.n):
                                yield sse(head | {"choices": [{"index": i * body.n + j, "text": text,
                                                               "logprobs": None, "finish_reason": None}]})
                    done = 0
                    while done < len(tickets):
                        i, d = await queue.get()
                        if d is None:
                            done += 1
                            continue
                        generated += 1
                        lp = logprob_block([d], 0) if d.logprob is not None else None
                        yield sse(head | {"choices": [{"index": i * body.n + d.index, "text": d.text, "logprobs": lp,
                                                       "finish_reason": d.finish_reason}]})
                finally:
                    for task in tasks:
                        task.cancel()
                if body.stream_options and body.stream_options.include_usage:
                    yield sse(head | {"choices": [], "usage": usage(sum(map(len, ids)), generated)})
                yield "data: [DONE]\n\n"

            return StreamingResponse(guarded(events()), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})

        async def collect(ticket):
            rows = [[] for _ in range(body.n)]
            async for d in deltas(ticket, request, poll_disconnect=True):
                rows[d.index].append(d)
            return rows

        results = await asyncio.gather(*(collect(t) for t in tickets))
        choices, generated = [], 0
        for i, rows in enumerate(results):
            for j, row in enumerate(rows):
                if not row:
                    return JSONResponse(error_body("cancelled"), status_code=499)
                generated += len(row)
                echo = echoes[i] if echoes else ""
                choices.append({"index": i * body.n + j, "text": echo + "".join(d.text for d in row),
                                "logprobs": logprob_block(row, len(echo)) if body.logprobs is not None else None,
                                "finish_reason": row[-1].finish_reason})
        return {"id": rid, "object": "text_completion", "created": now, "model": model_name, "choices": choices,
                "usage": usage(sum(map(len, ids)), generated)}

    return app
