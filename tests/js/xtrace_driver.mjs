// Drives every public method of a published `@xtraceai/memory` build (0.1.1 or 0.5.0, read from
// ../shared/clients at run time, unmodified) against a running engram, and prints one JSON
// object: each method's outcome, the HTTP exchanges behind it, and the methods the SDK has.
//
//   node --import ./peers.mjs xtrace_driver.mjs <sdk dir> <base url> <api key> <org id> <other org key> <other org id>
//
// Methods a version lacks are not called (pytest asserts each version's exact method list).
// The AI-SDK helpers run with the `ai`/`zod` peers installed by scripts/setup test; the
// language model handed to `createXtraceMemory` is a stand-in defined here (no LLM runs in
// the tests) — what is under test is the memory traffic the helper sends to engram.
import http from "node:http";
import { Campaign, exportedFunctions, publicMethods } from "./harness.mjs";

const [sdkDir, baseUrl, apiKey, orgId, otherKey, otherOrg] = process.argv.slice(2);
const sdk = await import(`${sdkDir}/dist/index.js`);
const aiSdk = await import(`${sdkDir}/dist/ai-sdk/index.js`);
const { generateText, streamText } = await import("ai");

const run = new Campaign();
const client = new sdk.MemoryClient({ apiKey, orgId, baseUrl, fetch: run.fetch, maxRetries: 0 });
const stranger = new sdk.MemoryClient({ apiKey: otherKey, orgId: otherOrg, baseUrl, fetch: run.fetch, maxRetries: 0 });
const has = (obj, name) => obj && typeof obj[name] === "function";
const v1 = typeof client.groups === "object";

const methods = [
  ...publicMethods(client.memories, "memories"),
  ...publicMethods(client.memories.jobs, "memories.jobs"),
  ...(client.groups ? publicMethods(client.groups, "groups") : []),
  ...(client.webhooks ? publicMethods(client.webhooks, "webhooks") : []),
  ...exportedFunctions(sdk, ""),
  ...exportedFunctions(aiSdk, "ai-sdk."),
];

const memory = (m) => m && { id: m.id, object: m.object, type: m.type, text: m.text, user_id: m.user_id,
                             conv_id: m.conv_id, group_ids: m.group_ids ?? null, status: m.details?.status ?? null,
                             supersedes: m.details?.supersedes ?? null, metadata: m.metadata ?? null };
const job = (j) => j && { object: j.object, status: j.status, error: j.error,
                          created: (j.result?.memories_created ?? []).map((r) => ({ id: r.id, type: r.type, text: r.text })),
                          ignored_group_ids: j.result?.ignored_group_ids ?? null };
const listing = (l) => l && { object: l.object, count: l.data.length, has_more: l.has_more,
                              user_ids: [...new Set(l.data.map((m) => m.user_id))],
                              texts: l.data.map((m) => m.text), context: l.context === undefined ? "absent" : l.context,
                              scores: l.data.map((m) => m.score), group_ids: l.data.map((m) => m.group_ids ?? null),
                              context_prompt: l.extras?.context_prompt ?? null };
const group = (g) => g && { id: g.id, object: g.object, name: g.name, prompt: g.prompt, status: g.status };

const stamp = Date.now();
const alice = `alice_${stamp}`;
const bob = `bob_${stamp}`;

// --- ingest and jobs
const asyncJob = await run.call("memories.ingest", () => client.memories.ingest({
  messages: [
    { role: "user", content: "My name is Alice and I live in Lisbon. I am a vegetarian and I love hiking." },
    { role: "assistant", content: "Noted: Alice, Lisbon, vegetarian, hiking." },
  ],
  user_id: alice, conv_id: `${alice}_a`,
}), job);
await run.call("memories.jobs.pollUntilDone", () => client.memories.jobs.pollUntilDone(asyncJob.id, { timeoutMs: 60_000, initialIntervalMs: 100 }), job);
await run.call("memories.jobs.get", () => client.memories.jobs.get(asyncJob.id), job);
await run.call("ingest.wait", () => client.memories.ingest({
  messages: [{ role: "user", content: "My name is Bob and I live in Oslo. I am a vegetarian and I love hiking." }],
  user_id: bob, conv_id: `${bob}_a`,
}, { wait: true }), job);
await run.call("jobs.get.missing", () => client.memories.jobs.get("job_00000000000000000000000000000000"), job);
await run.call("ingest.empty", () => client.memories.ingest({ messages: [], user_id: alice, conv_id: "c" }), job);
await run.call("ingest.other_org", () => stranger.memories.ingest({
  messages: [{ role: "user", content: "My name is Alice and I live in Lisbon too." }],
  user_id: alice, conv_id: `${alice}_a`,
}, { wait: true }), job);

// --- reading back: list, search, get
await run.call("memories.listPage", () => client.memories.listPage({ user_id: alice, limit: v1 ? 500 : 100 }), listing);
await run.call("listPage.limit_501", () => client.memories.listPage({ user_id: alice, limit: 501 }), listing);
await run.call("memories.list", async () => {
  const seen = [];
  for await (const m of client.memories.list({ user_id: alice, limit: 1 })) seen.push(m);
  return seen;
}, (seen) => ({ count: seen.length, distinct: new Set(seen.map((m) => m.id)).size,
                user_ids: [...new Set(seen.map((m) => m.user_id))] }));

const scope = v1 ? { user_id: alice } : { filters: { user_id: alice } };
const found = await run.call("memories.search", () => client.memories.search({ query: "where does the user live?", ...scope, limit: 10 }), listing);
await run.call("search.org_wide", () => client.memories.search({ query: "where does the user live?", limit: 10 }), listing);
await run.call("search.other_org", () => stranger.memories.search({ query: "where does the user live?", limit: 10 }), listing);
if (v1) {
  await run.call("search.retrieve", () => client.memories.search({ query: "where does the user live?", user_id: alice, mode: "retrieve" }), listing);
  await run.call("search.compose", () => client.memories.search({ query: "where does the user live?", user_id: alice, mode: "compose" }), listing);
  await run.call("search.legacy_filters", () => client.memories.search({ query: "where does the user live?", filters: { user_id: bob } }), listing);
  await run.call("search.bad_mode", () => client.memories.search({ query: "x", user_id: alice, mode: "summarise" }), listing);
}
await run.call("memories.retrieve", () => client.memories.retrieve({ query: "what does the user eat?", ...scope }), listing);
const first = found?.data?.[0];
await run.call("memories.get", () => client.memories.get(first.id), memory);

// --- 0.1.1: PATCH
let updated;
if (has(client.memories, "update")) {
  const fact = found.data.find((m) => m.type === "fact");
  updated = await run.call("memories.update", () => client.memories.update(fact.id, { text: "Alice lives in Porto.", metadata: { source: "sdk" } }), memory);
  await run.call("update.old", () => client.memories.get(fact.id), memory);
  await run.call("update.empty", () => client.memories.update(updated?.id ?? fact.id, {}), memory);
}

// --- 0.5.0: groups (with ingest tagging), trigger, recall, webhooks
let catchAll;
if (v1) {
  const prompted = await run.call("groups.create", () => client.groups.create({ name: `offsite ${stamp}`, prompt: "Facts about the Lisbon offsite." }), group);
  catchAll = await run.call("groups.create.catch_all", () => client.groups.create({ name: `team ${stamp}` }), group);
  // Later steps still run (and show their own failure) when a create failed.
  const catchAllId = catchAll?.id ?? "grp_00000000000000000000000000000000";
  const promptedId = prompted?.id ?? "grp_00000000000000000000000000000001";
  await run.call("groups.create.empty_prompt", () => client.groups.create({ name: `empty ${stamp}`, prompt: "" }), group);
  await run.call("groups.list", () => client.groups.list(), (gs) => gs.map(group));
  await run.call("groups.get", () => client.groups.get(catchAllId), group);
  await run.call("groups.get.other_org", () => stranger.groups.get(catchAllId), group);
  const convertee = await run.call("groups.create.convertee", () => client.groups.create({ name: `games ${stamp}` }), group);
  await run.call("groups.update", () => client.groups.update(convertee?.id ?? catchAllId, { name: `games renamed ${stamp}`, prompt: "Facts about tabletop games." }), group);
  await run.call("groups.update.empty_prompt", () => client.groups.update(promptedId, { prompt: "" }), group);
  const archived = await run.call("groups.archive", () => client.groups.archive(promptedId), group);
  await run.call("ingest.group_ids", () => client.memories.ingest({
    messages: [{ role: "user", content: "The team standup moved to 9:30am on Tuesdays in the Aurora room." }],
    user_id: alice, conv_id: `${alice}_team`, group_ids: [catchAllId, archived?.id ?? promptedId, "grp_ffffffffffffffffffffffffffffffff"],
    extract_artifacts: false,
  }, { wait: true }), job);
  await run.call("search.group_ids", () => client.memories.search({ query: "when is the standup?", group_ids: [catchAllId], mode: "retrieve" }), listing);
  await run.call("memories.recall", () => client.memories.recall({
    query: "what should I know?", pools: [{ user_id: alice }, { group_ids: [catchAllId] }], mode: "retrieve",
  }), (r) => ({ count: r.memories.length, user_ids: [...new Set(r.memories.map((m) => m.user_id))],
                prompt: r.prompt, scopes: r.scopes }));
  await run.call("memories.trigger", () => client.memories.trigger({
    user_id: alice, action: { tool: "Edit", args: { file_path: "src/billing/refunds.py" } }, mode: "retrieve",
  }), listing);
  await run.call("trigger.compose", () => client.memories.trigger({ user_id: alice, entities: ["src/billing/refunds.py"], task: "fix refunds" }), listing);
  await run.call("trigger.no_scope", () => client.memories.trigger({ entities: ["src/billing/refunds.py"] }), listing);
}

// --- renderMemoriesPrompt (client-side, over what engram returned)
if (typeof sdk.renderMemoriesPrompt === "function") {
  await run.call("renderMemoriesPrompt", async () => sdk.renderMemoriesPrompt(found.data, { viewerUserId: alice }), (s) => s);
}

// --- webhooks, delivered for real to a receiver on loopback and checked with the SDK's own verifier
if (v1) {
  const deliveries = [];
  const receiver = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      deliveries.push({ body: Buffer.concat(chunks), signature: req.headers["x-webhook-signature"] ?? "" });
      res.writeHead(200).end();
    });
  });
  await new Promise((r) => receiver.listen(0, "127.0.0.1", r));
  const hookUrl = `http://127.0.0.1:${receiver.address().port}/hook`;
  const config = await run.call("webhooks.set", () => client.webhooks.set({ url: hookUrl, events: ["memory.learning.completed"] }),
                                (w) => ({ object: w.object, url: w.url, events: w.events, enabled: w.enabled, secret: w.secret }));
  await run.call("webhooks.get", () => client.webhooks.get(), (w) => ({ url: w.url, secret: w.secret }));
  await run.call("webhooks.set.rotate", () => client.webhooks.set({ url: hookUrl }, { rotateSecret: false }), (w) => ({ secret: w.secret }));
  await run.call("ingest.for_webhook", () => client.memories.ingest({
    messages: [{ role: "user", content: "My favourite colour is teal." }], user_id: alice, conv_id: `${alice}_hook`,
  }, { wait: true }), job);
  await run.call("webhook.delivered", async () => {
    const deadline = Date.now() + 20_000;
    while (deliveries.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    return deliveries.length;
  });
  const delivery = deliveries[0];
  await run.call("verifyWebhookSignature", () => sdk.verifyWebhookSignature({ payload: delivery.body, signature: delivery.signature, secret: config.secret }));
  await run.call("verifyWebhookSignature.wrong_secret", () => sdk.verifyWebhookSignature({ payload: delivery.body, signature: delivery.signature, secret: "whsec_wrong" }));
  await run.call("parseWebhookEvent", () => sdk.parseWebhookEvent({ payload: delivery.body, signature: delivery.signature, secret: config.secret }),
                 (e) => ({ event: e.event, user_id: e.user_id, conv_id: e.conv_id, memories: e.memories.length, job_id: e.job_id }));
  await run.call("webhooks.delete", () => client.webhooks.delete());
  await run.call("webhooks.get.after_delete", () => client.webhooks.get(), (w) => w);
  receiver.close();
}

// --- the AI-SDK integration
const tools = aiSdk.memoryTools(client, { user_id: alice, conv_id: `${alice}_tools` });
await run.call("ai-sdk.memoryTools", async () => {
  const hits = await tools.search_memory.execute({ query: "where does the user live?" }, { toolCallId: "t1", messages: [] });
  const saved = await tools.save_memory.execute({ fact: "My name is Alice and I prefer window seats." }, { toolCallId: "t2", messages: [] });
  return { hits, saved };
}, ({ hits, saved }) => ({ hits: hits.length, texts: hits.map((h) => h.text), saved }));
if (typeof aiSdk.withDirectiveRecall === "function") {
  const wrapped = aiSdk.withDirectiveRecall({ edit: { description: "edit a file", execute: async (args) => `edited ${args.file_path}` } },
                                            client, { user_id: alice, namespace: "repo:engram" });
  await run.call("ai-sdk.withDirectiveRecall", () => wrapped.edit.execute({ file_path: "src/billing/refunds.py" }, { toolCallId: "t3", messages: [] }));
}
const seenPrompts = [];
const standIn = {
  specificationVersion: "v3", provider: "stand-in", modelId: "echo", supportedUrls: {},
  async doGenerate(options) {
    seenPrompts.push(options.prompt);
    return { content: [{ type: "text", text: "You live in Lisbon." }], finishReason: { unified: "stop", raw: "stop" },
             usage: { inputTokens: { total: 1 }, outputTokens: { total: 1 } }, warnings: [] };
  },
  async doStream(options) {
    seenPrompts.push(options.prompt);
    const parts = [{ type: "stream-start", warnings: [] }, { type: "text-start", id: "t" },
                   { type: "text-delta", id: "t", delta: "You live " }, { type: "text-delta", id: "t", delta: "in Lisbon." },
                   { type: "text-end", id: "t" },
                   { type: "finish", finishReason: { unified: "stop", raw: "stop" }, usage: { inputTokens: { total: 1 }, outputTokens: { total: 2 } } }];
    return { stream: new ReadableStream({ start(c) { for (const p of parts) c.enqueue(p); c.close(); } }) };
  },
};
await run.call("ai-sdk.createXtraceMemory", async () => {
  const wrap = aiSdk.createXtraceMemory({ apiKey, orgId, baseUrl, client, user_id: alice, conv_id: `${alice}_chat` });
  const out = await generateText({ model: wrap(standIn), prompt: "Where do I live?" });
  // auto-ingest is fire-and-forget inside the helper: wait for its request to come back
  await run.until(() => run.exchangesOf("ai-sdk.createXtraceMemory").some((x) => x.method === "POST" && x.path === "/v1/memories"));
  const system = (seenPrompts[0] ?? []).filter((m) => m.role === "system").map((m) => m.content).join("\n");
  // the streaming path: the same search before, and the streamed text ingested when the stream ends
  const streamed = streamText({ model: wrap(standIn), prompt: "Which city do I live in?" });
  const streamedText = await streamed.text;
  await run.until(() => run.exchangesOf("ai-sdk.createXtraceMemory").filter((x) => x.method === "POST" && x.path === "/v1/memories").length === 2);
  const streamSystem = (seenPrompts[1] ?? []).filter((m) => m.role === "system").map((m) => m.content).join("\n");
  return { text: out.text, system, streamedText, streamSystem };
});

// --- deletion last: hard delete, then the SDK's MemoryNotFound (on 0.1.1, of the fact its update made)
const victim = updated ?? first;
await run.call("delete.other_org", () => stranger.memories.delete(victim.id));
await run.call("memories.delete", () => client.memories.delete(victim.id));
await run.call("delete.get", () => client.memories.get(victim.id), memory);
await run.call("delete.again", () => client.memories.delete(victim.id));
await run.call("delete.listed", async () => {
  const ids = [];
  for await (const m of client.memories.list({ user_id: alice, limit: 100 })) ids.push(m.id);
  return ids.includes(victim.id);
});

run.print({ methods, alice, bob, catch_all: catchAll?.id ?? null, victim: victim?.id ?? null });
