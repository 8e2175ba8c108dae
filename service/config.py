"""Settings: the only place that reads the environment. Every field is `TEXTCLF_<NAME>`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TEXTCLF_", extra="ignore", frozen=True)

    model_dir: Path = Field(Path("artifacts/default"), description="artifact directory to serve")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="precision of the /predict forward pass; bfloat16 is faster on "
                               "CPUs with AVX512-BF16 or AMX and on GPUs, at ~1e-3 in probability")
    workers: int = Field(1, ge=1, le=64, description="server processes (multiprocess metrics)")
    multiproc_dir: Path | None = Field(None, description="metrics files when workers > 1")
    balance_connections: bool = Field(
        True, description="workers > 1: a worker holding more than its share of the open "
                          "connections closes some after their response, so clients reconnect")
    max_batch_size: int = Field(32, ge=1, le=4096, description="texts per forward pass")
    max_batch_delay_ms: float = Field(2.0, ge=0, le=1000, description="wait to fill a batch")
    max_queue_size: int = Field(1024, ge=1, description="texts waiting; beyond this -> 429")
    max_client_batch: int = Field(64, ge=1, description="inputs per request; beyond -> 413")
    max_input_chars: int = Field(20_000, ge=1, description="characters per input")
    max_tokens: int | None = Field(None, ge=1, description="truncation; default: the model's")
    max_body_bytes: int = Field(2_000_000, ge=1024, description="request body limit -> 413")
    body_timeout_s: float = Field(30.0, gt=0, description="time to receive a body -> 408")
    max_explain_tokens: int = Field(256, ge=1, description="tokens /explain accepts -> 422")
    num_threads: int | None = Field(None, ge=1, description="torch intra-op threads; unset means 1")
    inference_thread: bool | None = Field(
        None, description="forward passes on their own thread (true) or the event loop (false); "
                          "unset: the thread on CUDA, on the CPU the loop for passes of <= 10 ms")
    fast_predict: bool = Field(
        True, description="answer POST /predict in the HTTP protocol layer when its head and body "
                          "arrive together (no ASGI); false: every request goes through the app")
    api_key: SecretStr | None = Field(None, description="when set, required on all but health")
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    log_format: Literal["text", "json"] = "text"
    log_inputs: bool = Field(False, description="log request text (off: privacy)")
    shutdown_timeout_s: float = Field(30.0, ge=0, description="drain in-flight on SIGTERM")

    @field_validator("device")
    @classmethod
    def _device_syntax(cls, value: str) -> str:
        value = value.strip().lower()
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ValueError("must be auto, cpu, cuda or cuda:N")
        return value

    @field_validator("api_key", "max_tokens", "num_threads", "multiproc_dir", "inference_thread",
                     mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # compose and k8s pass `VAR=` for "not set"
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value
