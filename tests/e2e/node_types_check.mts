// Compiled by test_node_client.py with `tsc --noEmit --strict`: the way a TypeScript BFF uses tasks.mjs
// must type-check, and the misuses below must not (each @ts-expect-error fails the build if it compiles).
import { TaskServiceError, openTaskService, type Task } from "../../client/node/tasks.mjs";

const service = openTaskService("localhost:50051", { timeoutMs: 5_000 });
const tasks = service.forUser("a.jwt.token", { requestId: "r-1" });

async function story(): Promise<string[]> {
  const { task } = await tasks.createTask({ task: { title: "Buy milk", priority: "PRIORITY_HIGH" } });
  await tasks.updateTask({ task: { name: task.name, completed: true }, update_mask: { paths: ["completed"] } });
  const page = await tasks.listTasks({ page_size: 50, order_by: "due_time" });
  const due: (string | number)[] = page.tasks.flatMap((t: Task) => (t.due_time ? [t.due_time.seconds] : []));
  try {
    await tasks.deleteTask({ name: task.name, etag: task.etag });
  } catch (error) {
    if (error instanceof TaskServiceError && error.code === "ABORTED") return [error.reason, ...Object.keys(error.violations)];
    throw error;
  }
  return due.map(String);
}

// @ts-expect-error: a task needs a title-bearing object, not a string
await tasks.createTask({ task: "Buy milk" });
// @ts-expect-error: priorities are the enum's names
await tasks.createTask({ task: { title: "x", priority: "URGENT" } });
// @ts-expect-error: the token is the first argument of forUser, never a request field
await tasks.listTasks({ token: "a.jwt.token" });

void story;
service.close();
