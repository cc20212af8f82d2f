/** The `cake` command line. Commands are thin: they parse, call the library, print. */
import { Command, CommanderError } from "commander";
import { closeSharedDispatcher, isCakeError, oneLine, onRetry, onRetryWait } from "../src/index.js";
import { exportCommand } from "./commands/export.js";
import { inspectCommand } from "./commands/inspect.js";
import { lsCommand } from "./commands/ls.js";
import { pullCommand } from "./commands/pull.js";
import { gcCommand, rmCommand } from "./commands/rm-gc.js";
import { pushCommand } from "./commands/push.js";
import { loginCommand, logoutCommand } from "./commands/login.js";
import { diffCommand } from "./commands/diff.js";
import { loadCommand, saveCommand } from "./commands/save-load.js";
import { proxyCommand } from "./commands/proxy.js";
import { searchCommand } from "./commands/search.js";
import { browseCommand } from "./commands/browse.js";
import { indexCommand } from "./commands/index.js";
import { compressCommand, decompressCommand } from "./commands/compress.js";

export function program(): Command {
  const p = new Command("cake")
    .description("Hugging Face models as OCI artifacts, one tensor per layer")
    .version("0.1.0")
    .exitOverride();
  for (const c of [pullCommand(), pushCommand(), exportCommand(), lsCommand(), inspectCommand(), diffCommand(), rmCommand(), gcCommand(), compressCommand(), decompressCommand(), loginCommand(), logoutCommand(), saveCommand(), loadCommand(), proxyCommand(), indexCommand(), searchCommand(), browseCommand()]) p.addCommand(c);
  oneLineUsageErrors(p);
  return p;
}

/**
 * Commander's usage errors as cake's other errors read: one line after `cake: `, its "(Did you
 * mean pull?)" folded in, no help text after it (`cake pul` printed the whole help).
 */
function oneLineUsageErrors(cmd: Command): void {
  cmd.exitOverride().configureOutput({
    outputError: (str, write) => write(`cake: ${str.replace(/^error: /, "").replace(/\n\(Did you mean (.+)\?\)\n?$/, ": did you mean $1?\n")}`),
  });
  for (const c of cmd.commands) oneLineUsageErrors(c);
}

export async function main(argv: string[]): Promise<void> {
  // `cake inspect … | head`: a closed pipe ends the output, it is not an error.
  process.stdout.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(process.exitCode ?? 0);
    throw err;
  });
  // A long wait the server asked for (a rate limit's reset, Retry-After) is said on stderr, not sat through silently.
  const quiet = argv.includes("-q") || argv.includes("--quiet");
  if (!quiet) onRetryWait((line) => process.stderr.write(`cake: ${line}\n`));
  // A try that failed and is made again: news on a terminal (otherwise seconds of silence), noise in a log.
  if (!quiet && process.stderr.isTTY) onRetry((line) => process.stderr.write(`cake: ${line}\n`));
  let code = 0;
  try {
    await program().parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      code = err.exitCode === 0 ? 0 : 2; // usage errors: commander already printed them
    } else {
      process.stderr.write(`cake: ${oneLine(err)}\n`);
      code = isCakeError(err, "E_USAGE") || isCakeError(err, "E_REF") ? 2 : 1;
      if (process.env.CAKE_DEBUG) console.error(err);
    }
  } finally {
    await closeSharedDispatcher().catch(() => {});
  }
  process.exitCode = code;
}
