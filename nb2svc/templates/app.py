"""ASGI entry point of this service: run it with `uvicorn app:app`."""

from pathlib import Path

from nb2svc_runtime.app import create_app

app = create_app(Path(__file__).resolve().parent)
