// Drives client/node/tasks.mjs against a real todo-server; prints what happened as one JSON line.
// Usage: node node_story.mjs TARGET ALICE_JWT BOB_JWT NOT_A_JWT (see test_node_client.py).
import { TaskServiceError, openTaskService } from "../../client/node/tasks.mjs";

const [target, aliceToken, bobToken, badToken] = process.argv.slice(2);
const service = openTaskService(target);
const alice = service.forUser(aliceToken, { requestId: "node-story-1" });
const bob = service.forUser(bobToken);

async function outcome(call) {
  try {
    return { ok: await call };
  } catch (error) {
    if (!(error instanceof TaskServiceError)) throw error;
    return { code: error.code, reason: error.reason, violations: error.violations };
  }
}

const seen = {};
const { task } = await alice.createTask({ task: { title: "alice's", priority: "PRIORITY_HIGH" } });
seen.created = task;
seen.aliceTitles = (await alice.listTasks()).tasks.map((t) => t.title);
seen.bobTitles = (await bob.listTasks()).tasks.map((t) => t.title);
seen.bobGetsAlices = await outcome(bob.getTask({ name: task.name }));
seen.badToken = await outcome(service.forUser(badToken).listTasks());
seen.emptyTitle = await outcome(alice.createTask({ task: { title: "" } }));
const renamed = { name: task.name, title: "renamed" };
seen.renamed = (await alice.updateTask({ task: renamed, update_mask: { paths: ["title"] } })).task.title;
await alice.deleteTask({ name: task.name });
seen.afterDelete = await outcome(alice.getTask({ name: task.name }));
service.close();
console.log(JSON.stringify(seen));
