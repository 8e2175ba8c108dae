"""`python -m service`: check settings, device and model, then serve with uvicorn.

Any configuration problem ends the process with status 2 and one line naming the variable or
file, before the port is opened.
"""

from __future__ import annotations

import sys

from pydantic import ValidationError


def _settings_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    name = "TEXTCLF_" + str(first["loc"][0]).upper() if first.get("loc") else "TEXTCLF_*"
    return f"invalid {name}={first.get('input')!r}: {first['msg']}"


def main() -> int:
    from service.config import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"textclf: {_settings_error(exc)}", file=sys.stderr)
        return 2
    from model.artifact import ArtifactError, load_artifact
    from model.device import DeviceError, resolve_device

    try:
        device = resolve_device(settings.device)
    except DeviceError as exc:
        print(f"textclf: TEXTCLF_DEVICE: {exc}", file=sys.stderr)
        return 2
    try:
        load_artifact(settings.model_dir, "cpu")
    except ArtifactError as exc:
        print(f"textclf: TEXTCLF_MODEL_DIR: {exc}", file=sys.stderr)
        return 2
    from service.server import serve

    return serve(settings, device)


if __name__ == "__main__":
    sys.exit(main())
