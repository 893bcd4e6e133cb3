// What every client driver shares: each SDK call's outcome as JSON, the raw HTTP exchanges the
// call made (so pytest can validate engram's responses against the contract the SDK was built
// for), and the public methods an SDK object really has at run time (so a method the driver
// does not call fails the test instead of slipping by).

const realFetch = globalThis.fetch;

/** The public methods on `obj`'s prototype chain (below Object), as `prefix.name`. */
export function publicMethods(obj, prefix) {
  const names = new Set();
  for (let proto = Object.getPrototypeOf(obj); proto && proto !== Object.prototype; proto = Object.getPrototypeOf(proto)) {
    for (const name of Object.getOwnPropertyNames(proto)) {
      if (name === "constructor" || name.startsWith("_")) continue;
      const desc = Object.getOwnPropertyDescriptor(proto, name);
      if (desc && typeof desc.value === "function") names.add(`${prefix}.${name}`);
    }
  }
  return [...names].sort();
}

/** A module's exported functions that are not classes (renderers, signature checks, AI-SDK helpers). */
export function exportedFunctions(module, prefix) {
  return Object.entries(module)
    .filter(([, v]) => typeof v === "function" && !/^class\b/.test(Function.prototype.toString.call(v)))
    .map(([k]) => `${prefix}${k}`)
    .sort();
}

function errorSummary(e) {
  return {
    cls: e?.constructor?.name ?? typeof e,
    code: e?.code ?? e?.errorCode ?? null,
    status: e?.status ?? e?.statusCode ?? null,
    type: e?.errorType ?? null,
    message: String(e?.message ?? e).slice(0, 300),
    // the typed errors' own fields (memsy's feature / tier / scope), where the class has them
    extra: Object.fromEntries(["feature", "currentTier", "requiredScope", "interestPath", "retryAfter"]
      .filter((k) => e?.[k] !== undefined && e?.[k] !== null).map((k) => [k, e[k]])),
  };
}

export class Campaign {
  constructor() {
    this.results = {};
    this.exchanges = [];
    this.current = null;
    this.pending = new Set();
    // The SDKs' own fetch, wrapped: the request goes out unchanged and the response the SDK
    // reads is the real one; a clone of it is kept for the record.
    this.fetch = async (input, init = {}) => {
      const call = this.current;
      const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
      const response = await realFetch(input, init);
      const copy = response.clone();
      const done = copy.text().then((text) => {
        let body = null;
        try { body = text ? JSON.parse(text) : null; } catch { body = { unparsed: text.slice(0, 200) }; }
        let request = null;
        try { request = init.body ? JSON.parse(init.body) : null; } catch { request = null; }
        this.exchanges.push({ call, method: (init.method ?? "GET").toUpperCase(), path: url.pathname,
                              query: url.search, status: response.status, request, body });
      });
      this.pending.add(done);
      done.finally(() => this.pending.delete(done));
      return response;
    };
  }

  /** Run one SDK call under `name`; record its summary (or the error it raised) and return its value. */
  async call(name, fn, summarise = (v) => v ?? null) {
    this.current = name;
    try {
      const value = await fn();
      this.results[name] = { ok: true, value: summarise(value) };
      return value;
    } catch (e) {
      this.results[name] = { ok: false, error: errorSummary(e) };
      return undefined;
    } finally {
      await Promise.all([...this.pending]);
    }
  }

  /** Exchanges recorded so far for one call. */
  exchangesOf(name) {
    return this.exchanges.filter((x) => x.call === name);
  }

  async until(predicate, timeoutMs = 15000) {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      await Promise.all([...this.pending]);
      if (predicate()) return true;
      await new Promise((r) => setTimeout(r, 50));
    }
    return false;
  }

  print(extra = {}) {
    process.stdout.write(JSON.stringify({ results: this.results, exchanges: this.exchanges, ...extra }) + "\n");
  }
}
