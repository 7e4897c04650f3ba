"""OpenTelemetry tracing of every RPC, continuing the BFF's trace. Imported only when tracing is on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

from server.config import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider


def otlp_tracer_provider(service_name: str) -> TracerProvider:
    """A provider that batches spans to the exporter the standard OTEL_* variables configure (OTLP/gRPC)."""
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise ConfigError(
            "OTEL_* variables ask for tracing but OpenTelemetry is not installed: "
            "pip install 'todo-tasks[otel]', or unset OTEL_EXPORTER_OTLP_ENDPOINT"
        ) from None
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def tracing_interceptor(tracer_provider: Any) -> grpc.ServerInterceptor:
    """OpenTelemetry's gRPC server interceptor: a SERVER span per RPC, parent taken from `traceparent`."""
    from opentelemetry.instrumentation.grpc import server_interceptor

    return server_interceptor(tracer_provider=tracer_provider)


def current_trace_id() -> str:
    """The running call's trace id in hex (W3C form), for its access log line."""
    from opentelemetry import trace

    return format(trace.get_current_span().get_span_context().trace_id, "032x")
