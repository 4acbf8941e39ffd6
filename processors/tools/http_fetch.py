"""The ``http_fetch`` tool: GET a URL whose host is on the deployment's allow-list.

Every URL, the first and each redirect's target, is checked before a connection is made: scheme
http or https, no credentials in it, host (and port, when the entry names one) on
``ToolSettings.http_allow_hosts``. Redirects are followed by hand for that reason. The body is
read up to the size limit and the whole fetch runs under one timeout. Proxies from the
environment are ignored, so the allow-list is the only route out. Each request carries the call's
idempotency key as an ``Idempotency-Key`` header, the same on a retry or after a crash, so a
service that deduplicates by it sees one effect.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import httpx

from processors.tools.contract import HttpLimits, Tool, ToolContext, ToolError, ToolOutput

USER_AGENT = "agentlog-http-fetch/0.1"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}


class HttpFetchDenied(ToolError):
    """The URL is not one the fetch tool may reach (scheme, credentials, or host not allowed)."""


class HttpFetchError(ToolError):
    """The fetch failed for good: too many redirects, a malformed response, ..."""


class HttpFetchUnreachable(HttpFetchError):
    """The server could not be reached or dropped the connection (a later attempt may succeed)."""


class HttpFetchTimeout(HttpFetchError):
    """The fetch took longer than its timeout (a later attempt may succeed)."""


def check_url(url: str | httpx.URL, allow_hosts: Iterable[str]) -> httpx.URL:
    """``url`` parsed, if the fetch tool may request it; raises :class:`HttpFetchDenied` otherwise."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise HttpFetchDenied(f"not a valid URL {str(url)!r}: {exc}") from exc
    if parsed.scheme not in _DEFAULT_PORTS:
        raise HttpFetchDenied(f"scheme {parsed.scheme!r} of {str(url)!r} is not allowed: http or https only")
    if parsed.userinfo:
        raise HttpFetchDenied(f"URL {parsed.copy_with(username=None, password=None)!s} carries credentials")
    host = parsed.host.lower().rstrip(".")
    port = parsed.port or _DEFAULT_PORTS[parsed.scheme]
    allowed = {entry.lower().rstrip(".") for entry in allow_hosts}
    if not host or (host not in allowed and f"{host}:{port}" not in allowed):
        raise HttpFetchDenied(
            f"host {host}:{port} of {str(url)!r} is not on the fetch allow-list"
            + ("" if allowed else " (the allow-list is empty: fetching is disabled)")
        )
    return parsed


async def fetch(
    url: str, allow_hosts: tuple[str, ...], limits: HttpLimits, idempotency_key: str | None = None
) -> ToolOutput:
    """GET ``url`` following allowed redirects; the status line, content type and (capped) body."""
    target = check_url(url, allow_hosts)
    headers = {"user-agent": USER_AGENT, "accept-encoding": "identity"}
    if idempotency_key is not None:
        headers["idempotency-key"] = idempotency_key
    try:
        async with (
            asyncio.timeout(limits.timeout_seconds),
            httpx.AsyncClient(
                follow_redirects=False,
                trust_env=False,
                timeout=limits.timeout_seconds,
                # Uncompressed: the size limit then bounds what is downloaded, not a decompression.
                headers=headers,
            ) as client,
        ):
            for _ in range(limits.max_redirects + 1):
                async with client.stream("GET", target) as response:
                    if response.status_code in _REDIRECTS and "location" in response.headers:
                        target = check_url(target.join(response.headers["location"]), allow_hosts)
                        continue
                    body, truncated = await _read_capped(response, limits.response_bytes)
                    text = body.decode(response.encoding or "utf-8", errors="replace")
                    content_type = response.headers.get("content-type", "unknown")
                    header = f"HTTP {response.status_code} {response.reason_phrase} ({content_type}) {target}"
                    return ToolOutput(text=f"{header}\n\n{text}", truncated=truncated)
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise HttpFetchTimeout(f"fetching {url!r} took longer than {limits.timeout_seconds:g}s") from exc
    except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
        raise HttpFetchUnreachable(f"fetching {str(target)!r} failed: {type(exc).__name__}: {exc}") from exc
    except httpx.HTTPError as exc:
        raise HttpFetchError(f"fetching {str(target)!r} failed: {type(exc).__name__}: {exc}") from exc
    raise HttpFetchError(f"fetching {url!r} was redirected more than {limits.max_redirects} times")


async def _read_capped(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            return bytes(body[:limit]), True
    return bytes(body), False


async def _http_fetch(arguments: dict[str, Any], context: ToolContext) -> ToolOutput:
    return await fetch(
        arguments["url"], context.settings.http_allow_hosts, context.limits.http, context.idempotency_key
    )


TOOL = Tool(
    name="http_fetch",
    description=(
        "GET an http(s) URL and return its status, content type and body (text, size-limited). "
        "Only hosts on the deployment's allow-list can be reached."
    ),
    parameters={
        "type": "object",
        "properties": {"url": {"type": "string", "minLength": 1, "maxLength": 2048}},
        "required": ["url"],
        "additionalProperties": False,
    },
    invoke=_http_fetch,
    sensitive=True,
)
