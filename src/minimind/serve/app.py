"""`minimind serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) and the web chat page at `/`.

    GET  /health                 status, model, rows decoding now
    GET  /v1/models              the one model served
    POST /v1/chat/completions    chat (stream or not): reasoning_content, tool_calls, logprobs, usage
    POST /v1/completions         raw completion (base models)

Every error is an OpenAI error object: 400 bad JSON, bad values or a prompt over the context, 401 bad key,
404 unknown model, 413 body too large, 422 fields of the wrong type or missing.

`Server` holds the engine's scheduler and one method per route; the bodies it returns are built by the plain
functions below it, which tests call directly. `create_app` only binds the routes to the methods.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError

from minimind.data.audio import from_base64, read_audio, wav_bytes
from minimind.data.images import from_data_url, load_array
from minimind.errors import MiniMindError
from minimind.infer import Engine
from minimind.infer.omni import speak
from minimind.model.audio import log_mel
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

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
MAX_IMAGES = 8              # per request
ALIAS = "minimind"          # accepted as the model id too: the one model served answers to the project's name


def default_model_name(model_dir: str | Path) -> str:
    """The id clients send by default: the run's name for a run's output (`runs/quickstart/sft/model` → "sft",
    a checkpoint's `…/checkpoints/step-000200/model` → "step-000200"), else the directory's name."""
    path = Path(model_dir).resolve()
    return path.parent.name if path.name in ("model", "adapter") and path.parent.name else path.name


class APIError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.body = status, error_body(message, kind, param, code)


class Server:
    """The routes' handlers over one engine: request reading and checks, tickets for the scheduler, and the
    responses (whole or as server-sent events)."""

    def __init__(self, engine: Engine, model_name: str, api_key: str | None = None, max_rows: int = 16,
                 max_body_bytes: int | None = None):
        """max_body_bytes: the largest request body; default 1 MiB, or 24 MiB for a vision or omni model (inline
        images and clips)."""
        media = any(getattr(engine.model, name, None) is not None for name in ("vision", "audio"))
        self.engine, self.model_name, self.api_key = engine, model_name, api_key
        self.max_body_bytes = max_body_bytes or (24 << 20 if media else 1 << 20)
        self.speaking = asyncio.Lock()          # spoken replies: one at a time, beside the scheduler's batches
        self.scheduler = Scheduler(engine, max_rows=max_rows)
        self.tokenizer, self.context = engine.tokenizer, engine.model.config.max_position_embeddings
        self.token_text = TokenText(self.tokenizer)
        self.created = int(time.time())

    # ---- reading requests ------------------------------------------------------------------------------------

    def authorize(self, request: Request) -> None:
        if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
            raise APIError(401, "invalid or missing API key (send 'Authorization: Bearer KEY')",
                           "authentication_error", code="invalid_api_key")

    async def read(self, request: Request, model: type[BaseModel]):
        """The authorised, size-checked, parsed and validated body, for the model this server serves."""
        self.authorize(request)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise APIError(413, f"request body over {self.max_body_bytes} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body_bytes:
                raise APIError(413, f"request body over {self.max_body_bytes} bytes")
        return self.parse(body, model)

    def parse(self, body: bytes, model: type[BaseModel]):
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
        if parsed.model not in (self.model_name, ALIAS):
            raise APIError(404, f"model {parsed.model!r} does not exist; this server serves {self.model_name!r} "
                           f"(also called {ALIAS!r})", param="model", code="model_not_found")
        return parsed

    def ticket(self, prompt: list[int], request, max_new_tokens: int | None, logprobs: int | None,
               images: list | None = None, audios: list | None = None) -> Ticket:
        """A scheduler ticket for one prompt, its sampling checked; a prompt that fills the context is refused."""
        if len(prompt) >= self.context:
            raise APIError(400, f"the prompt has {len(prompt)} tokens; this model's context is {self.context} "
                           "tokens", param="messages", code="context_length_exceeded")
        params = request.sampling(max_new_tokens or self.context - len(prompt), logprobs)
        try:
            self.engine.check_params(params)
            self.engine.check_prompts([prompt])
            self.engine.check_images([prompt], [images or []])
            self.engine.check_audios([prompt], [audios or []])
        except MiniMindError as e:
            raise APIError(400, str(e)) from None
        return Ticket(prompt, params, asyncio.get_running_loop(), images, audios)

    def images(self, messages: list) -> list:
        """The images of the messages' image_url parts (data: URLs only), decoded and sized for the tower; a 400
        naming the part for a remote URL, a broken image, one over the limits, or a model that reads none."""
        parts = [part for i, m in enumerate(messages) for part in m.image_urls(f"messages[{i}]")]
        if not parts:
            return []
        vision = getattr(self.engine.model, "vision", None)
        if vision is None:
            raise APIError(400, f"{parts[0][0]}: this model reads no images (it is not a vision-language model)",
                           param=parts[0][0])
        if len(parts) > MAX_IMAGES:
            raise APIError(400, f"{len(parts)} images; a request may hold {MAX_IMAGES}", param="messages")
        out = []
        for where, url in parts:
            try:
                out.append(load_array(from_data_url(url, where), vision.image_size, where))
            except MiniMindError as e:
                raise APIError(400, str(e), param=where) from None
        return out

    def audios(self, messages: list) -> list:
        """The clips of the messages' input_audio parts (base64 wav, flac, mp3, ogg) as log-mels; a 400 naming the
        part for bad base64, an unreadable or overlong clip, or a model that does not hear."""
        parts = [part for i, m in enumerate(messages) for part in m.input_audios(f"messages[{i}]")]
        if not parts:
            return []
        audio = getattr(self.engine.model, "audio", None)
        if audio is None:
            raise APIError(400, f"{parts[0][0]}: this model hears no audio (it is not an omni model)",
                           param=parts[0][0])
        if len(parts) > MAX_IMAGES:
            raise APIError(400, f"{len(parts)} clips; a request may hold {MAX_IMAGES}", param="messages")
        out = []
        for where, data in parts:
            try:
                out.append(log_mel(read_audio(from_base64(data, where), where), audio.n_mels))
            except MiniMindError as e:
                raise APIError(400, str(e), param=where) from None
        return out

    async def spoken(self, prompt: list[int], body, audios: list) -> tuple[str, dict]:
        """An omni model's reply in text and sound (`minimind.infer.omni.speak`, one at a time in a worker thread):
        (its text, OpenAI's message.audio object with a base64 wav)."""
        if getattr(self.engine.model, "talker", None) is None:
            raise APIError(400, "modalities: this model does not speak (it is not an omni model with a Talker)",
                           param="modalities")
        if body.n != 1 or body.tools:
            raise APIError(400, "modalities: a spoken reply is one sample without tools", param="modalities")
        fmt = (body.audio or {}).get("format", "wav")
        if fmt != "wav":
            raise APIError(400, f"audio.format: only wav is written, not {fmt!r}", param="audio.format")
        params = body.sampling(body.max_completion_tokens or body.max_tokens or 256, None)
        try:
            self.engine.check_params(params)
        except MiniMindError as e:
            raise APIError(400, str(e)) from None
        async with self.speaking:
            reply = await asyncio.to_thread(speak, self.engine.model, self.tokenizer, prompt, audios, params,
                                            seed=params.seed or 0)
        text = self.tokenizer.decode(reply.text_ids, skip_special_tokens=True).strip()
        return text, {"id": new_id("audio"), "data": base64.b64encode(wav_bytes(reply.wave)).decode(),
                      "expires_at": int(time.time()) + 3600, "transcript": text}

    async def deltas(self, ticket: Ticket, request: Request, poll_disconnect: bool):
        """The ticket's Deltas as they come; cancels its rows if the client goes away."""
        self.scheduler.submit(ticket)
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
                self.scheduler.cancel(ticket)

    async def rows(self, ticket: Ticket, request: Request, n: int) -> list[list] | None:
        """Every Delta of the ticket's n samples, by sample; None when the client went away first."""
        rows = [[] for _ in range(n)]
        async for d in self.deltas(ticket, request, poll_disconnect=True):
            rows[d.index].append(d)
        return rows if all(rows) else None

    # ---- routes ------------------------------------------------------------------------------------------------

    def health(self) -> dict:
        return {"status": "ok", "model": self.model_name, "rows_decoding": self.scheduler.running_rows}

    def models(self, request: Request) -> dict:
        self.authorize(request)
        objective = self.engine.model.config.objective
        return {"object": "list", "data": [{"id": self.model_name, "object": "model", "created": self.created,
                                             "owned_by": "minimind", "max_model_len": self.context,
                                             "objective": objective, "modalities": self.modalities()}]}

    def modalities(self) -> dict:
        """What the model reads and writes: text, image (vision models), audio (omni models; out with a Talker)."""
        model = self.engine.model
        heard = ["audio"] if getattr(model, "audio", None) is not None else []
        seen = ["image"] if getattr(model, "vision", None) is not None else []
        return {"input": ["text", *seen, *heard],
                "output": ["text", *(["audio"] if getattr(model, "talker", None) is not None else [])]}

    async def chat_completions(self, request: Request):
        body: ChatRequest = await self.read(request, ChatRequest)
        tools = [t.model_dump() for t in body.tools] if body.tools and body.tool_choice != "none" else None
        prefix = body.forced_prefix()
        thinking = body.thinking() and not prefix       # a forced tool call is the answer: no reasoning before it
        audios = self.audios(body.messages)
        try:
            prompt = self.engine.chat_prompt([m.as_template() for m in body.messages], tools, thinking, audios)
        except (KeyError, TypeError, ValueError) as e:
            raise APIError(400, f"messages cannot be rendered: {e}", param="messages") from None
        prompt += self.tokenizer.encode(prefix) if prefix else []
        head = {"id": new_id("chatcmpl"), "created": int(time.time()), "model": self.model_name}
        if body.speaks():
            return await self.spoken_reply(prompt, body, audios, head)
        logprobs = (body.top_logprobs or 0) if body.logprobs else None
        ticket = self.ticket(prompt, body, body.max_completion_tokens or body.max_tokens, logprobs,
                             self.images(body.messages), audios)
        start = reply_start(prefix)
        if body.stream:
            events = self.chat_events(ticket, request, body, start, head | {"object": "chat.completion.chunk"},
                                      len(prompt))
            return StreamingResponse(guarded(events), media_type="text/event-stream", headers=SSE_HEADERS)
        rows = await self.rows(ticket, request, body.n)
        if rows is None:
            return JSONResponse(error_body("cancelled"), status_code=499)
        choices = [chat_choice(j, start, row, self.token_text if logprobs is not None else None)
                   for j, row in enumerate(rows)]
        return head | {"object": "chat.completion", "choices": choices,
                       "usage": usage(len(prompt), sum(d.tokens for row in rows for d in row))}

    async def spoken_reply(self, prompt: list[int], body, audios: list, head: dict):
        """A chat completion with `modalities: ["text", "audio"]`: the message's audio holds the wav and its
        transcript (content null, as OpenAI's); streamed, one chunk with the transcript and one with the audio."""
        if len(prompt) >= self.context:
            raise APIError(400, f"the prompt has {len(prompt)} tokens; this model's context is {self.context} "
                           "tokens", param="messages", code="context_length_exceeded")
        text, audio = await self.spoken(prompt, body, audios)
        tokens = len(self.tokenizer.encode(text))
        if body.stream:
            async def events():
                chunk = head | {"object": "chat.completion.chunk"}
                yield sse(chunk | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": None,
                                                                      "audio": {"id": audio["id"],
                                                                                "transcript": text}},
                                                "finish_reason": None}]})
                yield sse(chunk | {"choices": [{"index": 0, "delta": {"audio": {"id": audio["id"],
                                                                                "data": audio["data"],
                                                                                "expires_at": audio["expires_at"]}},
                                                "finish_reason": "stop"}]})
                yield "data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)
        message = {"role": "assistant", "content": None, "audio": audio}
        return head | {"object": "chat.completion",
                       "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
                       "usage": usage(len(prompt), tokens)}

    async def chat_events(self, ticket: Ticket, request: Request, body: ChatRequest, start: str, head: dict,
                          prompt_tokens: int):
        """The chat stream: a role chunk per sample, then reasoning/content deltas as the splitter separates them,
        each sample's tool calls and finish reason at its end, usage if asked, [DONE]."""
        splitters = [StreamSplitter(start) for _ in range(body.n)]
        texts, generated = [start] * body.n, 0
        for j in range(body.n):
            yield sse(head | {"choices": [{"index": j, "delta": {"role": "assistant", "content": ""},
                                           "logprobs": None, "finish_reason": None}]})
        async for d in self.deltas(ticket, request, poll_disconnect=False):
            generated += d.tokens
            texts[d.index] += d.text
            for chunk in chat_delta_chunks(d, splitters[d.index], texts[d.index], self.token_text):
                yield sse(head | {"choices": [chunk]})
        if body.stream_options and body.stream_options.include_usage:
            yield sse(head | {"choices": [], "usage": usage(prompt_tokens, generated)})
        yield "data: [DONE]\n\n"

    async def completions(self, request: Request):
        body: CompletionRequest = await self.read(request, CompletionRequest)
        prompts = body.prompt
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        if not prompts:
            raise APIError(400, "empty prompt", param="prompt")
        ids = [[self.tokenizer.bos_id, *self.tokenizer.encode(p)] if isinstance(p, str) else list(p)
               for p in prompts]
        tickets = [self.ticket(p, body, body.max_tokens, body.logprobs) for p in ids]
        head = {"id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()),
                "model": self.model_name}
        echoes = [p if isinstance(p, str) else self.tokenizer.decode(p) for p in prompts] if body.echo else None
        prompt_tokens = sum(map(len, ids))
        if body.stream:
            events = self.completion_events(tickets, request, body, echoes, head, prompt_tokens)
            return StreamingResponse(guarded(events), media_type="text/event-stream", headers=SSE_HEADERS)
        results = await asyncio.gather(*(self.rows(t, request, body.n) for t in tickets))
        if any(rows is None for rows in results):
            return JSONResponse(error_body("cancelled"), status_code=499)
        choices = [completion_choice(i * body.n + j, echoes[i] if echoes else "", row,
                                     self.token_text if body.logprobs is not None else None)
                   for i, rows in enumerate(results) for j, row in enumerate(rows)]
        generated = sum(d.tokens for rows in results for row in rows for d in row)
        return head | {"choices": choices, "usage": usage(prompt_tokens, generated)}

    async def completion_events(self, tickets: list[Ticket], request: Request, body: CompletionRequest,
                                echoes: list[str] | None, head: dict, prompt_tokens: int):
        """The completion stream: echoes first, then every prompt's samples' tokens as they come, interleaved."""
        generated, queue = 0, asyncio.Queue()

        async def pump(i, ticket):
            async for d in self.deltas(ticket, request, poll_disconnect=False):
                await queue.put((i, d))
            await queue.put((i, None))

        tasks = [asyncio.create_task(pump(i, t)) for i, t in enumerate(tickets)]
        try:
            for i, text in enumerate(echoes or []):
                for j in range(body.n):
                    yield sse(head | {"choices": [{"index": i * body.n + j, "text": text, "logprobs": None,
                                                   "finish_reason": None}]})
            done = 0
            while done < len(tickets):
                i, d = await queue.get()
                if d is None:
                    done += 1
                    continue
                generated += d.tokens
                lp = completion_logprobs([d], 0, self.token_text) if d.logprob is not None else None
                choice = {"index": i * body.n + d.index, "text": d.text, "logprobs": lp,
                          "finish_reason": d.finish_reason}
                yield sse(head | {"choices": [choice | ({"canvas": d.canvas} if d.canvas is not None else {})]})
        finally:
            for task in tasks:
                task.cancel()
        if body.stream_options and body.stream_options.include_usage:
            yield sse(head | {"choices": [], "usage": usage(prompt_tokens, generated)})
        yield "data: [DONE]\n\n"


# ---- response bodies -----------------------------------------------------------------------------------------

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


def reply_start(prefix: str) -> str:
    """What the parsed reply starts with: nothing, or for a forced prefix (a tool call the client demands) the end of
    the reasoning and the prefix, so that nothing the model writes after it can turn the call into reasoning."""
    return "</think>" + prefix if prefix else ""


def finish_reason(reason: str, parsed) -> str:
    return "tool_calls" if parsed.tool_calls else reason


def chat_choice(index: int, start: str, row: list, token_text: TokenText | None) -> dict:
    """One whole chat choice from a sample's Deltas: content, reasoning_content and tool calls parsed from the
    text (after `reply_start`), logprobs when token_text is given."""
    parsed = parse_output(start + "".join(d.text for d in row))
    message = {"role": "assistant", "content": parsed.content or (None if parsed.tool_calls else "")}
    if parsed.reasoning_content:
        message["reasoning_content"] = parsed.reasoning_content
    if parsed.tool_calls:
        message["tool_calls"] = tool_calls(parsed)
    lp = ({"content": [token_text.chat_entry(d.token_id, d.logprob, d.top_logprobs) for d in row]}
          if token_text is not None else None)
    return {"index": index, "message": message, "logprobs": lp, "finish_reason": finish_reason(row[-1].finish_reason,
                                                                                              parsed)}


def chat_delta_chunks(d, splitter: StreamSplitter, text: str, token_text: TokenText) -> list[dict]:
    """The stream chunks ("choices" entries) one Delta of a sample gives: its reasoning/content delta and logprob,
    and at the sample's end its tool calls and finish reason. `text` is the sample's text so far."""
    if d.finish_reason is None:
        (reasoning, content), parsed = splitter.feed(d.text), None
    else:
        parsed = parse_output(text)
        reasoning, content = splitter.finish(parsed)
    delta = ({"reasoning_content": reasoning} if reasoning else {}) | ({"content": content} if content else {})
    lp = {"content": [token_text.chat_entry(d.token_id, d.logprob, d.top_logprobs)]} if d.logprob is not None else None
    chunks = []
    if delta or lp or d.canvas is not None:
        chunks.append({"index": d.index, "delta": delta or {"content": ""}, "logprobs": lp, "finish_reason": None})
        if d.canvas is not None:                    # a diffusion model's block as it is denoised (the web page)
            chunks[-1]["canvas"] = d.canvas
    if parsed is not None:
        calls = tool_calls(parsed)
        if calls:
            chunks.append({"index": d.index, "delta": {"tool_calls": [c | {"index": k} for k, c in enumerate(calls)]},
                           "logprobs": None, "finish_reason": None})
        chunks.append({"index": d.index, "delta": {}, "logprobs": None,
                       "finish_reason": finish_reason(d.finish_reason, parsed)})
    return chunks


def completion_logprobs(deltas: list, offset: int, token_text: TokenText) -> dict:
    """The legacy completions `logprobs` block of some Deltas whose text starts at character `offset`."""
    tokens, offsets = [], []
    for d in deltas:
        offsets.append(offset)
        text = token_text(d.token_id)[0]
        tokens.append(text)
        offset += len(text)
    return {"tokens": tokens, "token_logprobs": [d.logprob for d in deltas],
            "top_logprobs": [{token_text(i)[0]: lp for i, lp in d.top_logprobs} for d in deltas],
            "text_offset": offsets}


def completion_choice(index: int, echo: str, row: list, token_text: TokenText | None) -> dict:
    return {"index": index, "text": echo + "".join(d.text for d in row),
            "logprobs": completion_logprobs(row, len(echo), token_text) if token_text is not None else None,
            "finish_reason": row[-1].finish_reason}


# ---- the app ---------------------------------------------------------------------------------------------------

def create_app(engine: Engine, model_name: str, api_key: str | None = None, cors_origins: list[str] = (),
               max_rows: int = 16, max_body_bytes: int | None = None) -> FastAPI:
    server = Server(engine, model_name, api_key, max_rows, max_body_bytes)
    page = resources.files("minimind.serve").joinpath("static/index.html").read_text()

    @contextlib.asynccontextmanager
    async def lifespan(_):
        server.scheduler.start()
        yield
        server.scheduler.stop()

    app = FastAPI(title="MiniMind", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.server = server
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

    app.get("/", response_class=HTMLResponse)(lambda: page)
    app.get("/health")(server.health)
    app.get("/v1/models")(server.models)
    app.post("/v1/chat/completions")(server.chat_completions)
    app.post("/v1/completions")(server.completions)
    return app
