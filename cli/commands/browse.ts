import { Command } from "commander";
import { libraryBackend } from "../browse/backend.js";
import { printPlain } from "../browse/plain.js";
import { accessFrom, hub, openStore, parsePositiveInt, withRegistryOptions, type AccessOpts } from "../context.js";

/**
 * ink decides at import time whether it draws live frames: under CI=true (is-in-ci) it prints only
 * the last frame at exit. `cake browse` has already checked that stdin and stdout are a terminal,
 * so it loads the UI with those variables out of sight and puts them back at once.
 */
async function loadUi(): Promise<typeof import("../browse/run.js")> {
  const saved = { CI: process.env.CI, CONTINUOUS_INTEGRATION: process.env.CONTINUOUS_INTEGRATION };
  delete process.env.CI;
  delete process.env.CONTINUOUS_INTEGRATION;
  try {
    return await import("../browse/run.js");
  } finally {
    for (const [k, v] of Object.entries(saved)) if (v !== undefined) process.env[k] = v;
  }
}

export function browseCommand(): Command {
  const cmd = new Command("browse")
    .description("full-screen terminal UI: the local store, Hub (and registry) search, model details, pull / export / remove / diff")
    .argument("[query]", "search for this at start", "")
    .option("--registry <host[/repo]>", "search this registry's catalog (host[:port]) or repository's tags (host[:port]/repo) next to the Hub")
    .option("-n, --limit <n>", "at most this many results per search (default 20)", parsePositiveInt)
    .option("--plain", "print the store (and the search results) instead of the UI, as when not on a terminal");
  return withRegistryOptions(cmd).action(async (query: string, opts: AccessOpts & { registry?: string; limit?: number; plain?: boolean }) => {
    const backend = libraryBackend({
      store: openStore(),
      hub: hub(),
      access: await accessFrom(opts),
      ...(opts.registry ? { registry: opts.registry } : {}),
      ...(opts.limit ? { limit: opts.limit } : {}),
    });
    if (opts.plain || !process.stdout.isTTY || !process.stdin.isTTY) return printPlain(backend, query);
    const { runBrowse } = await loadUi();
    const { interrupted } = await runBrowse(backend, query);
    if (interrupted) {
      process.stderr.write("cake browse: quit while a task was running; a pull run again continues where it stopped\n");
      process.exit(0);
    }
  });
}
