"""engram's web console: server-rendered pages at /console for people (docs/console.md).

Jinja2 templates and one stylesheet, all served by engram itself; no script runs in the
pages, nothing is loaded from anywhere else. `install` adds the routes to the API app."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles


def install(app: FastAPI) -> None:
    from engram.console.routes import HERE, PREFIX, router

    app.include_router(router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="console-static")
