// Drives a Batch account through @azure/batch (Node.js), unchanged from npm, with SharedKey:
// pools, jobs and tasks created, read and deleted. Prints one JSON line per step for the test.
// Usage: node batch_node.js ENDPOINT ACCOUNT KEY RUN_ID
"use strict";
const { BatchServiceClient, BatchSharedKeyCredentials } = require("@azure/batch");

const [endpoint, account, key, run] = process.argv.slice(2);
const client = new BatchServiceClient(new BatchSharedKeyCredentials(account, key), endpoint);
const say = (step, data) => console.log(JSON.stringify({ step, ...data }));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(what, probe) {
  for (let i = 0; i < 600; i++) {
    const value = await probe();
    if (value) return value;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function gone(get) {
  try {
    await get();
    return false;
  } catch (err) {
    if (err.statusCode === 404) return true;
    throw err;
  }
}

async function main() {
  const images = await client.account.listSupportedImages();
  const image = images[0];
  say("images", { count: images.length, nodeAgentSKUId: image.nodeAgentSKUId });

  const poolId = `node-pool-${run}`, jobId = `node-job-${run}`, taskId = "hello";
  await client.pool.add({
    id: poolId, vmSize: "standard_d2s_v3", targetDedicatedNodes: 1,
    virtualMachineConfiguration: { imageReference: image.imageReference, nodeAgentSKUId: image.nodeAgentSKUId },
  });
  const pool = await client.pool.get(poolId);
  say("pool", { id: pool.id, url: pool.url, state: pool.state });

  await client.job.add({ id: jobId, poolInfo: { poolId } });
  await client.task.add(jobId, { id: taskId, commandLine: "/bin/sh -c 'echo hello from node'" });
  const task = await until("the task to complete", async () => {
    const t = await client.task.get(jobId, taskId);
    return t.state === "completed" ? t : null;
  });
  say("task", { id: task.id, url: task.url, state: task.state, exitCode: task.executionInfo.exitCode });
  const listed = await client.task.list(jobId);
  say("tasks", { ids: listed.map((t) => t.id) });

  // Body-less DELETEs: the SDK signs an empty Content-Length for them.
  await client.task.deleteMethod(jobId, taskId);
  say("task-deleted", { remaining: (await client.task.list(jobId)).length });
  await client.job.deleteMethod(jobId);
  await until("the job to go", () => gone(() => client.job.get(jobId)));
  say("job-deleted", {});
  await client.pool.deleteMethod(poolId);
  await until("the pool to go", () => gone(() => client.pool.get(poolId)));
  say("pool-deleted", { exists: (await client.pool.exists(poolId))._response.status });
}

main().catch((err) => {
  console.error(err && (err.body ? JSON.stringify(err.body) : err.stack || err));
  process.exit(1);
});
