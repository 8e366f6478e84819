"""The official ``openai`` client, paying through a Tally channel.

``wrap(OpenAI(base_url=PROXY + "/v1", api_key=...), channel)`` returns a copy of the client
whose HTTP transport authorises every metered request (``POST`` to ``/chat/completions``,
``/completions``, ``/embeddings``, ``/responses``) with ``channel.authorize(body)`` and
verifies every successful answer, JSON or streamed, **before** the ``openai`` client reads
it: a stream is read to its end (its receipt comes last) and verified, then handed over.
Strict: an answer without a valid receipt raises :class:`tally_client.ReceiptError`
(never retried; the ``openai`` client propagates it as it is).

The proxy's refusals (``402 replayed``, ``402 over_cap``, ``401 payer_signature``, …) are
answers in the OpenAI error shape: the ``openai`` client raises its usual
``openai.APIStatusError`` with ``e.status_code`` and ``e.code`` the proxy's code. Nothing
was charged for them. The ``openai`` client's retries of 5xx answers each get a fresh
authorisation.

Where the receipt is: ``receipt_of(x)`` for a raw response
(``client.embeddings.with_raw_response.create(...)``) or a stream
(``client.chat.completions.create(..., stream=True)``); ``channel.last_receipt`` for the
last verified one; or ``wrap(..., on_receipt=callback)``, called with every receipt.
Works with ``OpenAI`` and ``AsyncOpenAI``.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Optional

from ._native import AUTHORIZATION_HEADER, RECEIPT_HEADER, Channel, Receipt

__all__ = ["wrap", "receipt_of", "TallyTransport", "AsyncTallyTransport", "RECEIPT_EXTENSION"]

#: The key of the verified :class:`~tally_client.Receipt` in ``httpx.Response.extensions``.
RECEIPT_EXTENSION = "tally_receipt"

#: The metered routes (``docs/protocol.md`` §10.1), by their last path segments.
_METERED = ("/chat/completions", "/completions", "/embeddings", "/responses")


def _httpx() -> Any:
    """The HTTP library the installed ``openai`` uses: ``httpx2`` (openai 3), else ``httpx``."""
    for name in ("httpx2", "httpx"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError("tally_client.openai needs httpx2 or httpx (installed with openai)")


_hx = _httpx()


def _is_metered(request: Any) -> bool:
    if request.method.upper() != "POST":
        return False
    path = request.url.path.rstrip("/").lower()
    return any(path.endswith(route) for route in _METERED)


def _is_stream(response: Any) -> bool:
    return response.headers.get("content-type", "").lower().startswith("text/event-stream")


def _rebuild(response: Any, request: Any, body: bytes, receipt: Receipt) -> Any:
    """A response with the same status and headers and the verified body, fully read."""
    headers = [
        (k, v)
        for k, v in response.headers.multi_items()
        if k.lower() not in ("transfer-encoding", "content-length")
    ]
    extensions = dict(response.extensions)
    extensions[RECEIPT_EXTENSION] = receipt
    return _hx.Response(
        status_code=response.status_code,
        headers=headers,
        content=body,
        request=request,
        extensions=extensions,
    )


class _Verifier:
    """What both transports share: authorise, then verify the answer's bytes."""

    def __init__(self, channel: Channel, on_receipt: Optional[Callable[[Receipt], None]]):
        self.channel = channel
        self.on_receipt = on_receipt

    def authorize(self, request: Any, body: bytes) -> str:
        header = self.channel.authorize(body)
        request.headers[AUTHORIZATION_HEADER] = header
        return header

    def verify(self, request: Any, body: bytes, header: str, response: Any, raw: bytes) -> Any:
        if _is_stream(response):
            receipt = self.channel.verify_sse_answer(body, raw, authorization=header)
        else:
            receipt = self.channel.verify_json_answer(
                body, response.headers.get(RECEIPT_HEADER), raw, authorization=header
            )
        if self.on_receipt is not None:
            self.on_receipt(receipt)
        return _rebuild(response, request, raw, receipt)


class TallyTransport(_hx.BaseTransport):
    """An ``httpx`` transport that pays through ``channel`` (see the module docs).
    ``inner`` is the transport that sends (default: a new ``HTTPTransport``)."""

    def __init__(
        self,
        channel: Channel,
        inner: Optional[Any] = None,
        on_receipt: Optional[Callable[[Receipt], None]] = None,
    ) -> None:
        self._v = _Verifier(channel, on_receipt)
        self._inner = inner if inner is not None else _hx.HTTPTransport()

    def handle_request(self, request: Any) -> Any:
        if not _is_metered(request):
            return self._inner.handle_request(request)
        body = request.read()
        header = self._v.authorize(request, body)
        response = self._inner.handle_request(request)
        if not 200 <= response.status_code < 300:
            return response
        try:
            raw = b"".join(response.stream)
        finally:
            response.close()
        return self._v.verify(request, body, header, response, raw)

    def close(self) -> None:
        self._inner.close()


class AsyncTallyTransport(_hx.AsyncBaseTransport):
    """The ``AsyncOpenAI`` counterpart of :class:`TallyTransport`."""

    def __init__(
        self,
        channel: Channel,
        inner: Optional[Any] = None,
        on_receipt: Optional[Callable[[Receipt], None]] = None,
    ) -> None:
        self._v = _Verifier(channel, on_receipt)
        self._inner = inner if inner is not None else _hx.AsyncHTTPTransport()

    async def handle_async_request(self, request: Any) -> Any:
        if not _is_metered(request):
            return await self._inner.handle_async_request(request)
        body = await request.aread()
        header = self._v.authorize(request, body)
        response = await self._inner.handle_async_request(request)
        if not 200 <= response.status_code < 300:
            return response
        chunks = []
        try:
            async for chunk in response.stream:
                chunks.append(chunk)
        finally:
            await response.aclose()
        return self._v.verify(request, body, header, response, b"".join(chunks))

    async def aclose(self) -> None:
        await self._inner.aclose()


def wrap(
    client: Any,
    channel: Channel,
    *,
    on_receipt: Optional[Callable[[Receipt], None]] = None,
    inner: Optional[Any] = None,
) -> Any:
    """A copy of the ``openai`` client ``client`` (``OpenAI`` or ``AsyncOpenAI``) whose
    every metered request is authorised by ``channel`` and every answer verified before the
    client reads it. ``on_receipt`` is called with each verified receipt; ``inner`` replaces
    the transport that sends (tests use it to tamper with answers)."""
    is_async = type(client).__name__.startswith("Async") or hasattr(client, "_client") and isinstance(
        getattr(client, "_client"), _hx.AsyncClient
    )
    timeout = getattr(client, "timeout", None)
    if is_async:
        http = _hx.AsyncClient(
            transport=AsyncTallyTransport(channel, inner=inner, on_receipt=on_receipt),
            timeout=timeout,
        )
    else:
        http = _hx.Client(
            transport=TallyTransport(channel, inner=inner, on_receipt=on_receipt),
            timeout=timeout,
        )
    return client.copy(http_client=http)


def receipt_of(response: Any) -> Optional[Receipt]:
    """The verified receipt of an answer of a wrapped client: a raw response
    (``with_raw_response``, ``with_streaming_response``), a ``Stream``/``AsyncStream``, or an
    ``httpx.Response``. ``None`` if it has none."""
    for attr in ("http_response", "response"):
        inner = getattr(response, attr, None)
        if inner is not None and hasattr(inner, "extensions"):
            response = inner
            break
    extensions = getattr(response, "extensions", None)
    if extensions is None:
        return None
    return extensions.get(RECEIPT_EXTENSION)
