"""The ``lean`` HTTP backend of the ``openai`` oracle: POST /chat/completions over one aiohttp session.

Why it exists: the openai SDK spends about 1.8 ms of CPU on each request (building an httpx
request, headers, options models) even over its aiohttp transport; aiohttp alone spends about 0.5.
One event loop on one core then tops out near 300 requests/s, which matters only against a fast
local judge at high concurrency (vLLM's server, ``serve-judge``: ``benchmarks/bench_oracle_throughput.py``
prints both side by side). Against a remote API the SDK backends cost nothing that matters.

What stays the SDK's: the client is built from the SDK client (its base URL, default headers and
auth headers), and every non-2xx answer, timeout and connection error becomes the SDK's own exception
(built by the SDK client from the response), so retries, Retry-After, fatal errors and their
messages are the same on every backend. The start-up checks (``GET /models``) always use the SDK.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp  # the SDK's aiohttp extra (a project dependency); this module is imported only for `lean`
import httpx2
import openai as sdk


class LeanChatClient:
    def __init__(self, client: sdk.AsyncOpenAI, *, timeout_s: float, connections: int) -> None:
        self._sdk = client
        self.url = str(client.base_url).rstrip("/") + "/chat/completions"
        headers = {k: v for k, v in client.default_headers.items() if isinstance(v, str)}
        headers.update(client.auth_headers)
        self._session = aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=max(1, connections)),
                                              timeout=aiohttp.ClientTimeout(total=timeout_s))

    def _request(self, body: bytes) -> httpx2.Request:
        return httpx2.Request("POST", self.url, content=body)

    async def post(self, body: dict[str, Any]) -> bytes:
        """The answer's body on a 2xx; the SDK's exception otherwise."""
        data = json.dumps(body).encode()
        try:
            async with self._session.post(self.url, data=data) as r:
                content = await r.read()
                status, headers = r.status, r.headers
        except TimeoutError:  # aiohttp's timeouts are TimeoutErrors (asyncio's, on 3.11+)
            raise sdk.APITimeoutError(request=self._request(data)) from None
        except aiohttp.ClientError as e:
            raise sdk.APIConnectionError(message=f"Connection error ({type(e).__name__}).",
                                         request=self._request(data)) from e
        if 200 <= status < 300:
            return content
        response = httpx2.Response(status, headers=list(headers.items()), content=content,
                                   request=self._request(data))
        raise self._sdk._make_status_error_from_response(response)

    async def close(self) -> None:
        await self._session.close()
