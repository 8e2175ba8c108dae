"""/docs: Swagger UI served from the swagger-ui-bundle package, so it works with no internet;
with TEXTCLF_API_KEY set, /openapi.json declares the key (bearer or X-API-Key header) on every
operation but the public ones, so Swagger UI's "Authorize" and generated clients send it."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

ASSETS = "/docs-assets"


SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "TEXTCLF_API_KEY"},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                     "description": "TEXTCLF_API_KEY"},
}


def declare_api_key(app: FastAPI, public_paths: frozenset[str]) -> None:
    """Add the security schemes to the generated schema (once, when it is first built)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            schema["security"] = [{name: []} for name in SECURITY_SCHEMES]
            for path in public_paths & schema["paths"].keys():
                for operation in schema["paths"][path].values():
                    operation["security"] = []  # open: probes and scrapers carry no key
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def install_docs(app: FastAPI) -> None:
    from swagger_ui_bundle import swagger_ui_path

    app.mount(ASSETS, StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )
