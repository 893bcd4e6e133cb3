// `node --import ./peers.mjs`: the published AI-SDK integrations import their peer dependencies
// (`ai`, `zod`) by bare name from ../shared/clients/…, where no node_modules exists. A peer that
// cannot be found beside the client is resolved from this directory's node_modules instead
// (installed by `scripts/setup test`), as an application's own install would provide it.
import { register } from "node:module";

register(new URL("./peers-hook.mjs", import.meta.url));
