// A server (grpc-js, not todo-server) that answers with status details that do not decode, as a proxy or
// a wrong target might: the client must reject the call with what it can read, not crash the process.
// Prints the rejection as one JSON line.
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

import { TaskServiceError, openTaskService } from "../../client/node/tasks.mjs";

// The client's own dependencies, from client/node/node_modules.
const require = createRequire(new URL("../../client/node/package.json", import.meta.url));
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const protos = fileURLToPath(new URL("../../protos", import.meta.url));
const definition = protoLoader.loadSync("todo/v1/task_service.proto", { includeDirs: [protos], keepCase: true });
const { TaskService } = grpc.loadPackageDefinition(definition).todo.v1;

const server = new grpc.Server();
const garbled = (_call, callback) => {
  const metadata = new grpc.Metadata();
  metadata.set("grpc-status-details-bin", Buffer.from([0x1a, 0xff, 0xff]));
  callback({ code: grpc.status.INTERNAL, details: "garbled details", metadata });
};
server.addService(TaskService.service, { CreateTask: garbled, GetTask: garbled, ListTasks: garbled, UpdateTask: garbled, DeleteTask: garbled });
const port = await new Promise((resolve, reject) =>
  server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
);

const service = openTaskService(`127.0.0.1:${port}`, { timeoutMs: 5_000 });
try {
  await service.forUser("a.jwt.token").createTask({ task: { title: "x" }, request_id: "" });
  console.log(JSON.stringify({ resolved: true }));
} catch (error) {
  if (!(error instanceof TaskServiceError)) throw error;
  console.log(JSON.stringify({ code: error.code, message: error.message, reason: error.reason, requestId: error.requestId }));
} finally {
  service.close();
  server.forceShutdown();
}
