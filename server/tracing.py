"""OpenTelemetry tracing of every RPC, continuing the BFF's trace. Imported only when tracing is on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

from server.call_pipeline import Layer
from server.config import ConfigError
from server.rpc_handlers import Behavior, final_code, wrap_method_handler

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


# Codes that mean the server failed (OpenTelemetry's RPC conventions); the rest are the caller's doing.
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


class SpanStatusInterceptor(Layer):
    """Puts each call's final status code on its span.

    OpenTelemetry's interceptor only sees `abort(code, details)`; our errors leave through
    `abort_with_status` (to carry google.rpc details), which it misses, so every span would say OK.
    """

    def __init__(self) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        def record(context: grpc.ServicerContext, failed: bool) -> None:
            code = final_code(context, failed)
            span = trace.get_current_span()
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code in _SERVER_ERRORS:
                span.set_status(Status(StatusCode.ERROR, code.name))  # the name only: details may hold data

        self._record = record

    def wrap_handler(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        record = self._record

        def wrap(behavior: Behavior, response_streaming: bool) -> Behavior:
            if response_streaming:

                def streaming(request: Any, context: grpc.ServicerContext) -> Any:
                    failed = True
                    try:
                        yield from behavior(request, context)
                        failed = False
                    finally:
                        record(context, failed)

                return streaming

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                failed = True
                try:
                    response = behavior(request, context)
                    failed = False
                    return response
                finally:
                    record(context, failed)

            return unary

        return wrap_method_handler(handler, wrap)
