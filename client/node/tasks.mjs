// todo-tasks from a Node.js BFF (Next.js route handlers, server actions): one gRPC channel for the whole
// process, and per request a view that puts the signed-in user's Better Auth JWT on each call.
//
//   const tasks = openTaskService(process.env.TODO_TARGET ?? "localhost:50051");
//   const { token } = await auth.api.getToken({ headers: await headers() });
//   const { task } = await tasks.forUser(token).createTask({ task: { title: "Buy milk" } });
//
// Requests and responses are plain objects with the proto's field names (`page_size`, `next_page_token`);
// enums are their names ("PRIORITY_HIGH"), timestamps { seconds, nanos } (seconds as a string).
import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";

const DEFAULT_PROTOS = fileURLToPath(new URL("../../protos", import.meta.url));
const METHODS = ["CreateTask", "GetTask", "ListTasks", "UpdateTask", "DeleteTask"];

// The Python client's policy (client/channel.py): gRPC retries UNAVAILABLE itself, but only for the calls
// that are safe to send twice (reads; CreateTask, keyed by its request_id): a reply lost to a broken
// connection is UNAVAILABLE too, and an update or delete sent again would fail on its own change. Those two
// are sent again here only on the server's own UNAVAILABLE (its ErrorInfo says nothing was written).
// retryThrottling stops a fleet of BFFs piling on a sick server.
const RETRIED_BY_CHANNEL = ["GetTask", "ListTasks", "CreateTask"];
const RETRY_POLICY = { maxAttempts: 5, initialBackoff: "0.5s", maxBackoff: "4s", backoffMultiplier: 2 };
const SERVICE_CONFIG = {
  loadBalancingConfig: [{ round_robin: {} }],
  methodConfig: [
    {
      name: RETRIED_BY_CHANNEL.map((method) => ({ service: "todo.v1.TaskService", method })),
      retryPolicy: { ...RETRY_POLICY, retryableStatusCodes: ["UNAVAILABLE"] },
    },
  ],
  retryThrottling: { maxTokens: 10, tokenRatio: 0.1 },
};

// google.rpc.Status and the two details the server sends, enough to read `grpc-status-details-bin`.
const RPC_TYPES = protobuf.Root.fromJSON({
  nested: {
    google: {
      nested: {
        protobuf: { nested: { Any: { fields: { type_url: { type: "string", id: 1 }, value: { type: "bytes", id: 2 } } } } },
        rpc: {
          nested: {
            Status: {
              fields: {
                code: { type: "int32", id: 1 },
                message: { type: "string", id: 2 },
                details: { rule: "repeated", type: "google.protobuf.Any", id: 3 },
              },
            },
            ErrorInfo: {
              fields: {
                reason: { type: "string", id: 1 },
                domain: { type: "string", id: 2 },
                metadata: { keyType: "string", type: "string", id: 3 },
              },
            },
            BadRequest: {
              fields: { field_violations: { rule: "repeated", type: "FieldViolation", id: 1 } },
              nested: {
                FieldViolation: {
                  fields: { field: { type: "string", id: 1 }, description: { type: "string", id: 2 } },
                },
              },
            },
          },
        },
      },
    },
  },
});
const STATUS = RPC_TYPES.lookupType("google.rpc.Status");
const ERROR_INFO = RPC_TYPES.lookupType("google.rpc.ErrorInfo");
const BAD_REQUEST = RPC_TYPES.lookupType("google.rpc.BadRequest");

/** A failed call: `code` is the gRPC status name ("NOT_FOUND"), `reason` the ErrorInfo reason
 * ("TOKEN_EXPIRED"), `violations` the BadRequest field violations as { field: description }; for a
 * createTask, `requestId` is the request_id it was sent with: send it again to retry without a duplicate. */
export class TaskServiceError extends Error {
  constructor(code, message, reason, violations) {
    super(message);
    this.name = "TaskServiceError";
    this.code = code;
    this.reason = reason;
    this.violations = violations;
  }
}

function taskServiceError(error) {
  const code = grpc.status[error.code] ?? "UNKNOWN";
  const { reason, violations } = readDetails(error.metadata?.get("grpc-status-details-bin") ?? []);
  return new TaskServiceError(code, error.details || code, reason, violations);
}

// The status details, or none if they do not decode: they come from whatever answered (a proxy, say), and
// a throw here, inside grpc-js's callback, would leave the call's promise unsettled and crash the process.
function readDetails([details]) {
  const read = { reason: "", violations: {} };
  if (!details) return read;
  try {
    for (const any of STATUS.decode(details).details) {
      if (any.type_url.endsWith("/google.rpc.ErrorInfo")) read.reason = ERROR_INFO.decode(any.value).reason;
      if (any.type_url.endsWith("/google.rpc.BadRequest")) {
        for (const v of BAD_REQUEST.decode(any.value).field_violations) read.violations[v.field] = v.description;
      }
    }
  } catch {
    return { reason: "", violations: {} };
  }
  return read;
}

/**
 * Opens one channel to todo-tasks at `target` ("host:port"). Keep it for the process; call `forUser`
 * per request. Options: `credentials` (default plaintext; grpc.credentials.createSsl(ca, key, cert) for
 * TLS or mutual TLS), `protosDir` (where todo/v1/task_service.proto is), `timeoutMs` per call (10 s).
 */
export function openTaskService(target, { credentials, protosDir = DEFAULT_PROTOS, timeoutMs = 10_000 } = {}) {
  const definition = protoLoader.loadSync("todo/v1/task_service.proto", {
    includeDirs: [protosDir],
    keepCase: true,
    enums: String,
    longs: String,
    defaults: true,
    oneofs: true,
  });
  const { TaskService } = grpc.loadPackageDefinition(definition).todo.v1;
  const stub = new TaskService(target, credentials ?? grpc.credentials.createInsecure(), {
    "grpc.service_config": JSON.stringify(SERVICE_CONFIG),
  });

  function attempt(method, request, metadata, deadline) {
    return new Promise((resolve, reject) => {
      stub[method](request, metadata, { deadline: new Date(deadline) }, (error, response) => {
        if (!error) return resolve(response);
        const failure = taskServiceError(error);
        if (method === "CreateTask") failure.requestId = request.request_id; // to retry it with the same id
        reject(failure);
      });
    });
  }

  async function call(method, request, metadata) {
    const deadline = Date.now() + timeoutMs;
    if (RETRIED_BY_CHANNEL.includes(method)) return attempt(method, request, metadata, deadline);
    let ceilingMs = 500; // as the channel's policy draws its waits (gRFC A6)
    for (let attempts = 1; ; attempts++) {
      try {
        return await attempt(method, request, metadata, deadline);
      } catch (failure) {
        const waitMs = Math.random() * ceilingMs;
        const nothingWritten =
          failure.code === "UNAVAILABLE" && failure.reason !== "" && failure.reason !== "COMMIT_OUTCOME_UNKNOWN";
        if (!nothingWritten || attempts >= RETRY_POLICY.maxAttempts || Date.now() + waitMs >= deadline) throw failure;
        await new Promise((resolve) => setTimeout(resolve, waitMs));
        ceilingMs = Math.min(ceilingMs * 2, 4000);
      }
    }
  }

  return {
    /** The calls, made as the user `token` (a Better Auth JWT) names; `requestId` goes to the access log. */
    forUser(token, { requestId } = {}) {
      if (!token) throw new TypeError("forUser needs the signed-in user's JWT");
      const metadata = new grpc.Metadata();
      metadata.set("authorization", `Bearer ${token}`);
      if (requestId) metadata.set("x-request-id", requestId);
      const calls = {};
      for (const method of METHODS) {
        const name = method[0].toLowerCase() + method.slice(1);
        calls[name] = (request = {}) => call(method, withDefaults(method, request), metadata);
      }
      return calls;
    },
    close() {
      stub.close();
    },
  };
}

function withDefaults(method, request) {
  if (method === "CreateTask") {
    // A retried create must not make a second task: the server keys it by request_id. Pass your own
    // request_id to retry a failed create yourself (error.requestId says which one was used).
    return { parent: "users/me", ...request, request_id: request.request_id || randomUUID() };
  }
  if (method === "ListTasks") return { parent: "users/me", ...request };
  return request;
}
