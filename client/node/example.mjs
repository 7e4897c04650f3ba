// `TODO_TOKEN=$(.venv/bin/todo token --sub alice) node client/node/example.mjs` against `make run`.
import { TaskServiceError, openTaskService } from "./tasks.mjs";

const service = openTaskService(process.env.TODO_TARGET ?? "localhost:50051");
const tasks = service.forUser(process.env.TODO_TOKEN, { requestId: "example-1" });
try {
  const { task } = await tasks.createTask({ task: { title: "Buy milk", priority: "PRIORITY_HIGH" } });
  await tasks.updateTask({ task: { name: task.name, completed: true }, update_mask: { paths: ["completed"] } });
  const page = await tasks.listTasks({ order_by: "priority desc" });
  for (const t of page.tasks) console.log(t.name, t.title, t.completed ? "done" : "open");
  await tasks.deleteTask({ name: task.name });
  try {
    await tasks.getTask({ name: task.name });
    throw new Error(`${task.name} is still there after its delete`);
  } catch (error) {
    // The one failure expected here; any other (no token, no server) ends the example with its error.
    if (!(error instanceof TaskServiceError && error.code === "NOT_FOUND")) throw error;
    console.log("gone:", error.code, error.reason);
  }
} finally {
  service.close();
}
