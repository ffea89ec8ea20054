"""The proxy's upstream client: aiohttp under the openai SDK when installed, httpx otherwise."""

from __future__ import annotations

import asyncio

import openai
import pytest
from uq_guard_server.upstream import OpenAIUpstream

aiohttp = pytest.importorskip("aiohttp", reason="the server extra installs aiohttp")


def _transport_name(upstream: OpenAIUpstream) -> str:
    client = upstream.client._client  # the SDK's httpx-compatible client
    return type(client._transport).__name__


def test_the_upstream_calls_go_through_aiohttp() -> None:
    upstream = OpenAIUpstream("http://127.0.0.1:9/v1", models=["m"])
    try:
        assert _transport_name(upstream) == "AiohttpTransport"
    finally:
        asyncio.run(upstream.aclose())


def test_a_url_with_credentials_keeps_httpx() -> None:
    upstream = OpenAIUpstream("http://admin:secret@127.0.0.1:9/v1", models=["m"])
    try:
        assert _transport_name(upstream) != "AiohttpTransport"
    finally:
        asyncio.run(upstream.aclose())


def test_a_refused_connection_is_not_reported_as_a_timeout() -> None:
    from uq_guard_server.errors import as_api_error

    async def call() -> BaseException:
        upstream = OpenAIUpstream("http://127.0.0.1:9/v1", models=["m"])
        try:
            await upstream.client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
        except openai.APIError as exc:
            return exc
        finally:
            await upstream.aclose()
        raise AssertionError("port 9 answered")

    error = as_api_error(asyncio.run(call()), "req_1", [])
    assert (error.status, error.code) == (502, "unreachable")
