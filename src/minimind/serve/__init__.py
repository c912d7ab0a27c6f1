"""The OpenAI-compatible server and web chat page (`minimind serve`)."""

from minimind.serve.app import create_app
from minimind.serve.scheduler import Scheduler, Ticket

__all__ = ["Scheduler", "Ticket", "create_app", "serve"]


def serve(engine, model_name: str, host: str = "127.0.0.1", port: int = 8998, api_key: str | None = None,
          cors_origins: list[str] = (), max_rows: int = 16) -> None:
    import uvicorn

    app = create_app(engine, model_name, api_key=api_key, cors_origins=cors_origins, max_rows=max_rows)
    uvicorn.run(app, host=host, port=port, log_level="info")
