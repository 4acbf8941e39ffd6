"""OpenTelemetry tracing, continued through every event's W3C ``traceparent`` Kafka header.

Off unless configured (``AGENTLOG_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``, or
``AGENTLOG_TRACE_FILE``). Off, :func:`span` does nothing but hand the incoming ``traceparent`` on,
so the events a processor writes carry the submission's trace exactly as before; no SDK, exporter
or instrumentation is loaded. On, :func:`configure` installs the SDK's tracer provider, and
:func:`span` continues the record's trace and hands on the new span's ``traceparent``.

Headers are read and written by OpenTelemetry's ``TraceContextTextMapPropagator`` (it validates
the header), never parsed here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from streams.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

__all__ = [
    "Link",
    "Span",
    "SpanKind",
    "configure",
    "context_of",
    "current_traceparent",
    "enabled",
    "inject",
    "link_to",
    "shutdown",
    "span",
    "start_span",
    "trace_id_of",
]

TRACEPARENT = "traceparent"
_propagator = TraceContextTextMapPropagator()
_tracer = trace.get_tracer("agentlog")
_provider: TracerProvider | None = None


def enabled() -> bool:
    """True once :func:`configure` installed an exporting tracer provider in this process."""
    return _provider is not None


def configure(settings: Settings, component: str) -> bool:
    """Install the SDK tracer provider if ``settings`` ask for export; True if they do.

    Idempotent. The service name is ``agentlog-<component>`` unless ``OTEL_SERVICE_NAME`` says
    otherwise. Called once by each process's entry point, before clients are created (the aiohttp
    instrumentation hooks sessions made after it).
    """
    if _provider is not None or not settings.tracing:
        return _provider is not None
    # Imported here: a process that does not trace never loads the SDK or the exporters.
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    service = os.environ.get("OTEL_SERVICE_NAME") or f"agentlog-{component}"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = settings.otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    if settings.trace_file is not None:
        # Simple (synchronous) processor: a span is on disk when it ends, so a killed process
        # loses none and a reader sees it at once. Meant for operators and tests, not volume.
        from streams.trace_file import JsonLinesSpanExporter

        provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(settings.trace_file)))
    install(provider)
    _instrument_aiohttp(provider)
    return True


def install(provider: TracerProvider) -> None:
    """Trace with ``provider`` from now on (tests pass one with an in-memory exporter)."""
    global _provider, _tracer
    trace.set_tracer_provider(provider)
    _provider = provider
    _tracer = provider.get_tracer("agentlog")


def uninstall() -> None:
    """Back to the no-op tracer (tests only: the global provider itself cannot be reset)."""
    global _provider, _tracer
    _provider = None
    _tracer = trace.NoOpTracer()


def shutdown() -> None:
    """Flush and stop the exporters (at process exit)."""
    if _provider is not None:
        _provider.shutdown()


def _instrument_aiohttp(provider: TracerProvider) -> None:
    # The LLM gateway's openai SDK runs over aiohttp: each provider call gets an HTTP client span
    # and sends the traceparent on to the provider.
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor

    instrumentor = AioHttpClientInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)


def context_of(traceparent: str | None) -> otel_context.Context | None:
    """The context a ``traceparent`` header value continues; None if absent or invalid."""
    if not traceparent:
        return None
    ctx = _propagator.extract({TRACEPARENT: traceparent})
    if not trace.get_current_span(ctx).get_span_context().is_valid:
        return None
    return ctx


def link_to(traceparent: str | None) -> Link | None:
    """A span link to the span a ``traceparent`` names; None if absent or invalid."""
    ctx = context_of(traceparent)
    return None if ctx is None else Link(trace.get_current_span(ctx).get_span_context())


def trace_id_of(traceparent: str | None) -> str | None:
    """The 32-hex-digit trace id a ``traceparent`` carries; None if absent or invalid."""
    ctx = context_of(traceparent)
    if ctx is None:
        return None
    return trace.format_trace_id(trace.get_current_span(ctx).get_span_context().trace_id)


def inject(span: Span | None = None) -> str | None:
    """The ``traceparent`` of ``span`` (default: the current span); None if there is none."""
    carrier: dict[str, str] = {}
    ctx = trace.set_span_in_context(span) if span is not None else None
    _propagator.inject(carrier, context=ctx)
    return carrier.get(TRACEPARENT)


def current_traceparent() -> str | None:
    """The current span's ``traceparent`` while tracing is on; None when off or outside a span."""
    if _provider is None:
        return None
    return inject()


def traceparent_from(headers: Iterable[tuple[str, bytes | None]] | Mapping[str, str] | None) -> str | None:
    """The ``traceparent`` value of Kafka record headers (pairs) or a text mapping, if any."""
    if headers is None:
        return None
    if not isinstance(headers, list | tuple) and isinstance(headers, Mapping):
        return headers.get(TRACEPARENT)
    # Kafka's headers are a short list (8 here): a scan is cheaper than building a dict.
    for name, value in headers:
        if name == TRACEPARENT and value is not None:
            return value.decode("ascii", "replace")
    return None


class _HandOn:
    """Tracing off: a context manager that only hands the incoming traceparent on (a generator
    context manager costs ~1 us per use on the hot path; this one ~0.2 us)."""

    __slots__ = ("_traceparent",)

    def __init__(self, traceparent: str | None) -> None:
        self._traceparent = traceparent

    def __enter__(self) -> str | None:
        return self._traceparent

    def __exit__(self, *_: object) -> None:
        return None


def span(
    name: str,
    traceparent: str | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    links: Sequence[Link] = (),
) -> AbstractContextManager[str | None]:
    """A current span continuing ``traceparent`` (or the current span); entering it gives the
    traceparent to hand on: the new span's when tracing is on, ``traceparent`` unchanged when off."""
    if _provider is None:
        return _HandOn(traceparent)
    return _span(name, traceparent, kind, attributes, links)


@contextmanager
def _span(
    name: str,
    traceparent: str | None,
    kind: SpanKind,
    attributes: Mapping[str, Any] | None,
    links: Sequence[Link],
) -> Iterator[str | None]:
    parent = context_of(traceparent) if traceparent else None
    with _tracer.start_as_current_span(
        name, context=parent, kind=kind, attributes=attributes, links=links
    ) as current:
        yield inject(current)


def start_span(
    name: str,
    traceparent: str | None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> Span | None:
    """A span continuing ``traceparent``, not made current (the caller ends it); None when off."""
    if _provider is None:
        return None
    return _tracer.start_span(name, context=context_of(traceparent), kind=kind, attributes=attributes)
