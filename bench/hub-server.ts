/**
 * The Hub emulation in a process of its own, for the cold-pull figures: serving the bytes then costs
 * the bench's event loop nothing, and no client shares a process with it.
 *
 *   node dist/bench/hub-server.js <repo> <model dir> [<tls dir>]
 *
 * With a tls dir (key.pem, cert.pem), the CDN answers over TLS, as the Hub's does.
 * Prints `{"url": …}` once the model is committed; then each line on stdin is a JSON object of knobs
 * (`{"bandwidth": 40e6, "latencyMs": 30}`), answered with `ok`. Ends when stdin closes.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import readline from "node:readline";
import { startHub } from "../test/hub/emulator.js";

const [repo, dir, tls] = process.argv.slice(2);
if (!repo || !dir) throw new Error("usage: hub-server.js <repo> <model dir> [<tls dir>]");
const hub = await startHub(tls ? { cdnTls: { key: readFileSync(path.join(tls, "key.pem")), cert: readFileSync(path.join(tls, "cert.pem")) } } : {});
hub.addRepo(repo);
await hub.commit(repo, dir);
process.stdout.write(`${JSON.stringify({ url: hub.url })}\n`);
const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  hub.setKnobs(JSON.parse(line) as Parameters<typeof hub.setKnobs>[0]);
  process.stdout.write("ok\n");
});
lines.on("close", () => void hub.close().then(() => process.exit(0)));
