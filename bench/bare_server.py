"""The ceiling: a bare TaskService whose GetTask returns a constant task. No interceptor, no database.

`python -m bench.bare_server --port P [--aio] [--max-workers N]` serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from concurrent import futures

import grpc
from google.protobuf import timestamp_pb2
from todo.v1 import task_service_pb2 as pb
from todo.v1 import task_service_pb2_grpc as pb_grpc

# As big as a real GetTask answer (see bench.seed), so both targets move the same bytes.
_NOW = timestamp_pb2.Timestamp(seconds=1_790_000_000, nanos=123_456_000)
CONSTANT_RESPONSE = pb.GetTaskResponse(
    task=pb.Task(
        name=f"users/bench-reader/tasks/{'0' * 32}",
        title="Benchmark task 000",
        description="A task the benchmark reads back.",
        priority=pb.PRIORITY_MEDIUM,
        create_time=_NOW,
        update_time=_NOW,
        etag="0123456789abcdef",
    )
)


class ConstantTaskService(pb_grpc.TaskServiceServicer):
    def GetTask(self, request: pb.GetTaskRequest, context: grpc.ServicerContext) -> pb.GetTaskResponse:
        return CONSTANT_RESPONSE


class AsyncConstantTaskService(pb_grpc.TaskServiceServicer):
    async def GetTask(self, request: pb.GetTaskRequest, context: grpc.aio.ServicerContext) -> pb.GetTaskResponse:
        return CONSTANT_RESPONSE


def _serve_sync(address: str, max_workers: int, max_concurrent_rpcs: int) -> None:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers), maximum_concurrent_rpcs=max_concurrent_rpcs
    )
    pb_grpc.add_TaskServiceServicer_to_server(ConstantTaskService(), server)
    server.add_insecure_port(address)
    server.start()
    print(f"bare grpcio serving on {address}", flush=True)
    while True:
        time.sleep(3600)


async def _serve_aio(address: str, max_concurrent_rpcs: int) -> None:
    server = grpc.aio.server(maximum_concurrent_rpcs=max_concurrent_rpcs)
    pb_grpc.add_TaskServiceServicer_to_server(AsyncConstantTaskService(), server)
    server.add_insecure_port(address)
    await server.start()
    print(f"bare grpc.aio serving on {address}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--aio", action="store_true", help="serve on grpc.aio instead of the thread pool")
    parser.add_argument("--max-workers", type=int, default=16)
    parser.add_argument("--max-concurrent-rpcs", type=int, default=1000)
    args = parser.parse_args()
    address = f"127.0.0.1:{args.port}"
    if args.aio:
        asyncio.run(_serve_aio(address, args.max_concurrent_rpcs))
    else:
        _serve_sync(address, args.max_workers, args.max_concurrent_rpcs)


if __name__ == "__main__":
    main()
