"""The canned LLM: an OpenAI-compatible chat-completions server on loopback that answers at once.

A bare ASGI app under uvicorn (httptools, uvloop), so the server's own cost stays small and is the
same for every contender. It counts calls per ``Idempotency-Key`` header so a run can check that no
recorded effect was performed twice. Run: ``python -m bench.llm_server --port P``.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Any

from bench.workload import canned_answer

_calls: Counter[str] = Counter()


def _completion(request: dict[str, Any]) -> dict[str, Any]:
    message = canned_answer(request.get("messages") or [])
    finish = "tool_calls" if message.get("tool_calls") else "stop"
    return {
        "id": f"chatcmpl-bench-{sum(_calls.values())}",
        "object": "chat.completion",
        "created": 0,
        "model": str(request.get("model") or "bench-canned"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52},
    }


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        event = await receive()
        chunks.append(event.get("body", b""))
        if not event.get("more_body"):
            return b"".join(chunks)


async def _send_json(send: Any, status: int, payload: Any) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path, method = scope["path"], scope["method"]
    if method == "POST" and path.endswith("/chat/completions"):
        request = json.loads(await _body(receive))
        headers = dict(scope["headers"])
        _calls[headers.get(b"idempotency-key", b"").decode()] += 1
        await _send_json(send, 200, _completion(request))
    elif method == "GET" and path.endswith("/calls"):
        # Effects performed per idempotency key, for exactly-once checks after a run.
        repeated = {key: n for key, n in _calls.items() if key and n > 1}
        await _send_json(send, 200, {"calls": sum(_calls.values()), "repeated": repeated})
    elif method == "GET" and path.endswith("/models"):
        await _send_json(send, 200, {"object": "list", "data": [{"id": "bench-canned", "object": "model"}]})
    else:
        await _send_json(send, 404, {"error": {"message": f"no route {method} {path}"}})


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
