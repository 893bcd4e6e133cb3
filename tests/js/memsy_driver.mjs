// Drives every public method of the published `@memsy-io/memsy` 0.3.2 (MemsyClient and
// MemsyControlClient with all their resources, read from ../shared/clients at run time,
// unmodified) against a running engram, and prints one JSON object: each method's outcome,
// the HTTP exchanges behind it, and the methods the SDK has.
//
//   node memsy_driver.mjs <sdk dir> <base url …/v1> <admin key> <org id> <read-only key> <operator key>
//
// The operator key is an admin key of the server's `default` org: creating and listing orgs is
// the operator's (docs/design.md); an org's own admin key manages its org, roles and teams.
//
// The SDK calls the global fetch; it is wrapped here (requests unchanged) to record exchanges.
import { Campaign, exportedFunctions, publicMethods } from "./harness.mjs";

const [sdkDir, baseUrl, adminKey, orgId, readKey, operatorKey] = process.argv.slice(2);
const sdk = await import(`${sdkDir}/dist/index.mjs`);

const run = new Campaign();
globalThis.fetch = run.fetch;
const client = new sdk.MemsyClient({ baseUrl, apiKey: adminKey, maxRetries: 0 });
const control = new sdk.MemsyControlClient({ baseUrl, apiKey: adminKey, maxRetries: 0 });
const reader = new sdk.MemsyClient({ baseUrl, apiKey: readKey, maxRetries: 0 });
const operator = new sdk.MemsyClient({ baseUrl, apiKey: operatorKey, maxRetries: 0 });

// `request` (BaseHttpClient) is marked @internal in the SDK's source: every call below goes through it.
const internal = (names) => names.filter((n) => !n.endsWith(".request"));
const methods = [
  ...internal(publicMethods(client, "client")),
  ...publicMethods(client.orgs, "client.orgs"),
  ...publicMethods(client.roles, "client.roles"),
  ...publicMethods(client.teams, "client.teams"),
  ...publicMethods(client.memories, "client.memories"),
  ...internal(publicMethods(control, "control")),
  ...publicMethods(control.keys, "control.keys"),
  ...publicMethods(control.usage, "control.usage"),
  ...publicMethods(control.billing, "control.billing"),
  ...publicMethods(control.events, "control.events"),
  ...publicMethods(control.interest, "control.interest"),
  ...exportedFunctions(sdk, ""),  // none in 0.3.2: a helper added later shows up here
];

const stamp = Date.now();
const actor = `ana_${stamp}`;
const other = `ben_${stamp}`;
const session = `${actor}_s1`;
const until = async (check, timeoutMs = 20_000) => {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value || Date.now() > deadline) return value;
    await new Promise((r) => setTimeout(r, 100));
  }
};
const onboarding = (o) => o && { orgId: o.orgId, roleId: o.roleId ?? null, teamId: o.teamId ?? null, name: o.name,
                                 focus: o.focus, promotionPrompt: o.promotionPrompt, promptMeta: o.promptMeta };

// --- the hot path
const ingested = await run.call("client.ingest", () => client.ingest([
  { actorId: actor, sessionId: session, kind: "user_message", content: "My name is Ana and I live in Porto. I prefer dark mode.",
    roleId: "engineer", teamId: "platform" },
  { actorId: other, sessionId: `${other}_s1`, kind: "user_message", content: "My name is Ben and I live in Turin.",
    roleId: "designer", teamId: "brand" },
]), (r) => ({ eventIds: r.eventIds.length }));
await run.call("ingest.not_array", () => client.ingest({ actorId: actor, sessionId: session, kind: "user_message", content: "x" }));
await run.call("ingest.bad_kind", () => client.ingest([{ actorId: actor, sessionId: session, kind: "shout", content: "x" }]));
await run.call("ingest.read_only_key", () => reader.ingest([{ actorId: actor, sessionId: session, kind: "user_message", content: "x" }]));
const ids = ingested?.eventIds ?? [];
await until(async () => (await client.status(ids)).completedIds.length === ids.length);
await run.call("client.status", () => client.status(ids), (s) => ({ completed: s.completedIds.length, pending: s.pendingIds.length,
                                                                    failed: s.failedIds.length, total: s.total }));
await run.call("client.search", () => client.search("where does the user live?", { actorId: actor, includeSourceEvents: true }),
               (r) => ({ count: r.results.length, contents: r.results.map((x) => x.content),
                         sourceEvents: r.results.map((x) => (x.sourceEvents ?? []).length) }));
await run.call("search.role_ids", () => client.search("where does the user live?", { roleIds: ["designer"] }),
               (r) => ({ count: r.results.length, contents: r.results.map((x) => x.content) }));
await run.call("search.team_ids", () => client.search("where does the user live?", { teamIds: ["platform"] }),
               (r) => ({ count: r.results.length, contents: r.results.map((x) => x.content) }));
await run.call("client.health", () => client.health(), (h) => ({ status: h.status, version: h.version, components: Object.keys(h.components ?? {}),
                                                                billingEnabled: h.billingEnabled }));
await run.call("search.bad_key", () => new sdk.MemsyClient({ baseUrl, apiKey: "msy_not_a_key", maxRetries: 0 }).search("x"));

// --- onboarding: orgs (the operator's), then the caller's own org, its roles and teams
const org = (o) => onboarding(o);
const newOrg = `acme-${stamp}`;
await run.call("client.orgs.create", () => operator.orgs.create(newOrg, "Acme", "Customer support for a bike shop"), org);
await run.call("orgs.create.not_operator", () => client.orgs.create(`nope-${stamp}`, "Nope", "x"), org);
await run.call("client.orgs.list", () => operator.orgs.list(), (os) => os.map(org));
await run.call("client.orgs.get", () => operator.orgs.get(newOrg), org);
await run.call("client.orgs.update", () => operator.orgs.update(newOrg, { focus: "Bike repairs and rentals" }), org);
await run.call("client.orgs.regeneratePrompt", () => operator.orgs.regeneratePrompt(newOrg), org);
await run.call("orgs.get.own", () => client.orgs.get(orgId), org);
await run.call("orgs.update.own", () => client.orgs.update(orgId, { name: "X Org", focus: "Platform engineering notes" }), org);
await run.call("orgs.get.other_org", () => client.orgs.get(newOrg), org);
await run.call("client.orgs.delete", () => operator.orgs.delete(newOrg));
await run.call("orgs.get.deleted", () => operator.orgs.get(newOrg), org);
const role = await run.call("client.roles.create", () => client.roles.create(orgId, "engineer", "Code and deploys"), onboarding);
const roleId = role?.roleId ?? "engineer";
await run.call("client.roles.list", () => client.roles.list(orgId, { limit: 10 }), (rs) => rs.map(onboarding));
await run.call("client.roles.get", () => client.roles.get(roleId, orgId), onboarding);
await run.call("client.roles.update", () => client.roles.update(roleId, orgId, { focus: "Code, deploys and on-call" }), onboarding);
await run.call("client.roles.regeneratePrompt", () => client.roles.regeneratePrompt(roleId, orgId), onboarding);
await run.call("client.roles.delete", () => client.roles.delete(roleId, orgId));
await run.call("roles.get.deleted", () => client.roles.get(roleId, orgId), onboarding);
const team = await run.call("client.teams.create", () => client.teams.create(orgId, "platform", "Platform engineering"), onboarding);
const teamId = team?.teamId ?? "platform";
await run.call("client.teams.list", () => client.teams.list(orgId, { limit: 10, offset: 0 }), (ts) => ts.map(onboarding));
await run.call("client.teams.get", () => client.teams.get(teamId, orgId), onboarding);
await run.call("client.teams.update", () => client.teams.update(teamId, orgId, { name: "platform-eng" }), onboarding);
await run.call("client.teams.regeneratePrompt", () => client.teams.regeneratePrompt(teamId, orgId), onboarding);
await run.call("client.teams.delete", () => client.teams.delete(teamId, orgId));

// --- console memories
const page = await run.call("client.memories.list", () => client.memories.list({ actorId: actor, limit: 10 }),
                            (p) => ({ total: p.total, count: p.items.length, limit: p.limit, offset: p.offset,
                                      actors: [...new Set(p.items.map((m) => m.scope?.actorId))], texts: p.items.map((m) => m.text) }));
await run.call("client.memories.stats", () => client.memories.stats(), (s) => ({ total: s.total, activeMemories: s.activeMemories, byType: s.byType }));
await run.call("client.memories.get", () => client.memories.get(page?.items?.[0]?.memoryId ?? "00000000-0000-4000-8000-000000000000"),
               (m) => ({ memoryId: m.memoryId, text: m.text, actorId: m.scope?.actorId, status: m.status }));
await run.call("memories.get.missing", () => client.memories.get("00000000-0000-4000-8000-000000000000"));

// --- the control plane
await run.call("control.me", () => control.me(), (m) => ({ orgId: m.orgId, tier: m.tier }));
await run.call("control.health", () => control.health(), (h) => ({ status: h.status }));
const created = await run.call("control.keys.create", () => control.keys.create(`ci-${stamp}`, { scopes: ["read"] }),
                               (k) => ({ keyId: k.keyId, rawKey: typeof k.rawKey, scopes: k.scopes, name: k.name }));
await run.call("control.keys.list", () => control.keys.list(), (l) => ({ count: l.keys.length, names: l.keys.map((k) => k.name), activeCount: l.activeCount }));
await run.call("control.keys.usage", () => control.keys.usage(created?.keyId ?? "key_missing"), (u) => ({ points: Array.isArray(u) }));
await run.call("control.keys.delete", () => control.keys.delete(created?.keyId ?? "key_missing"));
// usage counters reach the store on the meter's next flush (about a second)
run.current = "wait";
await until(async () => ((await control.usage.summary()).dimensions.find((d) => d.dimension === "events_ingested")?.used ?? 0) >= 2);
await run.call("control.usage.summary", () => control.usage.summary(),
               (s) => ({ orgId: s.orgId, dimensions: Object.fromEntries(s.dimensions.map((d) => [d.dimension, d.used])) }));
await run.call("control.usage.timeseries", () => control.usage.timeseries({ dimension: "events_ingested" }),
               (t) => ({ granularity: t.granularity, total: t.data.reduce((n, p) => n + p.quantity, 0) }));
await run.call("control.events.list", () => control.events.list({ actorId: actor, limit: 10 }),
               (l) => ({ total: l.total, count: l.items.length, actors: [...new Set(l.items.map((e) => e.actorId))] }));
await run.call("control.billing.summary", () => control.billing.summary());
await run.call("control.billing.invoices", () => control.billing.invoices());
await run.call("control.interest.express", () => control.interest.express("ops@example.com", "Ops", { company: "Acme" }));
await run.call("control.interest.status", () => control.interest.status());

run.print({ methods, actor, other });
