// Makes the calls it reads from stdin, one JSON line each ({"method": "deleteTask", "request": {...}}), as
// the user whose token is argv[3], on one channel to argv[2]; prints each outcome as one JSON line:
// {"ok": response} or {"error": {code, reason}}. Lets a Python test act between a Node BFF's calls.
import { createInterface } from "node:readline";

import { TaskServiceError, openTaskService } from "../../client/node/tasks.mjs";

const [target, token] = process.argv.slice(2);
const service = openTaskService(target, { timeoutMs: 20_000 });
const calls = service.forUser(token);
for await (const line of createInterface({ input: process.stdin })) {
  const { method, request } = JSON.parse(line);
  try {
    console.log(JSON.stringify({ ok: await calls[method](request) }));
  } catch (error) {
    if (!(error instanceof TaskServiceError)) throw error;
    console.log(JSON.stringify({ error: { code: error.code, reason: error.reason } }));
  }
}
service.close();
