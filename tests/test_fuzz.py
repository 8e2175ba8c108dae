"""Fuzzing: schemathesis against the app's own /openapi.json (hostile inputs: test_hostile.py).

schemathesis (in-process ASGI, the real lifespan and model) generates schema-valid and
schema-violating requests for every operation: no 5xx, status codes, content types, headers and
bodies as documented, schema-violating requests refused with 4xx. Bounded and derandomized, so
the same examples run every time (well under a minute).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from conftest import build_artifact
from hypothesis import HealthCheck, Phase, given, settings
from prometheus_client import CollectorRegistry
from schemathesis import GenerationMode

from service.config import Settings
from service.main import create_app

ROOT = Path(__file__).resolve().parents[1]
KEY = "fuzz-key"
AUTH = {"X-API-Key": KEY}
EXAMPLES = {GenerationMode.POSITIVE: 60, GenerationMode.NEGATIVE: 60}

# Schema-valid requests that runtime limits may still refuse, documented as such: 413 (more
# inputs / characters than TEXTCLF_MAX_CLIENT_BATCH / MAX_INPUT_CHARS allow) and 422 (more
# tokens than the model takes, with truncate: false). Everything else must be 2xx.
CONFIG = schemathesis.Config.from_dict({"checks": {"positive_data_acceptance": {
    "expected-statuses": ["2xx", "401", "404", "409", "413", "422", "429"]}}})


def _operations() -> list[tuple[str, str]]:
    """Every documented operation, read from the schema (no model needed for that)."""
    spec = create_app(Settings(model_dir="unused", api_key=KEY), CollectorRegistry()).openapi()
    return [(path, method.upper()) for path, item in spec["paths"].items() for method in item]


OPERATIONS = _operations()


@pytest.fixture(scope="module")
def fuzz_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_artifact(tmp_path_factory.mktemp("fuzz") / "model")


@pytest.fixture
def schema(fuzz_model: Path) -> Iterator[object]:
    """A fresh app per test: schemathesis' pytest plugin ends every ASGI lifespan it started
    when a test ends (and the service does not start again after a stop)."""
    app = create_app(Settings(model_dir=fuzz_model, device="cpu", api_key=KEY), CollectorRegistry())
    yield schemathesis.openapi.from_asgi("/openapi.json", app, headers=AUTH, config=CONFIG)


def _has_inputs(operation: object) -> bool:
    return any(True for _ in operation.iter_parameters()) or bool(  # type: ignore[attr-defined]
        operation.get_request_payload_content_types())  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=lambda m: m.value)
@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_schemathesis(schema: object, path: str, method: str, mode: GenerationMode) -> None:
    operation = schema[path][method]  # type: ignore[index]
    if mode is GenerationMode.NEGATIVE and not _has_inputs(operation):
        return  # nothing to violate (no parameters, no body): the positive run covers it

    @settings(max_examples=EXAMPLES[mode], deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate, Phase.shrink], report_multiple_bugs=False,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=AUTH)

    run()


def test_schema_describes_what_handlers_require() -> None:
    """Findings of the fuzzing, fixed in the schema: an input needs a non-space character and a
    list at least one input (else 400 `empty`), /metrics is text/plain, the admin endpoint is
    documented with its errors."""
    spec = create_app(Settings(model_dir="unused", api_key=KEY), CollectorRegistry()).openapi()
    predict = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert predict["text/plain"]["schema"] == {"type": "string", "minLength": 1, "pattern": r"\S"}
    inputs = predict["application/json"]["schema"]["properties"]["inputs"]["anyOf"]
    assert inputs[0]["pattern"] == r"\S" and inputs[1]["minItems"] == 1
    assert "text/plain" in spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert {"200", "401", "404", "409", "503"} <= set(spec["paths"]["/admin/reload"]["post"]["responses"])


def test_schema_declares_the_api_key_where_it_is_required() -> None:
    spec = create_app(Settings(model_dir="unused", api_key=KEY), CollectorRegistry()).openapi()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer", "description": "TEXTCLF_API_KEY"}
    assert schemes["apiKeyHeader"]["name"] == "X-API-Key"
    assert spec["security"] == [{"bearer": []}, {"apiKeyHeader": []}]
    assert spec["paths"]["/health/ready"]["get"]["security"] == []
    assert "security" not in spec["paths"]["/predict"]["post"]  # the global requirement holds
    open_spec = create_app(Settings(model_dir="unused"), CollectorRegistry()).openapi()
    assert "security" not in open_spec and "securitySchemes" not in open_spec.get("components", {})
