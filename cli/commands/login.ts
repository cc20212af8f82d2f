import { Command } from "commander";
import { CakeError, login } from "../../src/index.js";
import { accessFrom, say } from "../context.js";

export function loginCommand(): Command {
  return new Command("login")
    .description("log in to a registry; credentials are stored as docker does (~/.docker/config.json or its credential store)")
    .argument("<registry>", "host[:port]")
    .requiredOption("-u, --username <user>", "user")
    .option("-p, --password <password>", "password or token (prefer --password-stdin)")
    .option("--password-stdin", "read the password from standard input")
    .option("--plain-http", "use HTTP, not HTTPS (automatic for localhost and 127.0.0.0/8)")
    .option("-q, --quiet", "say nothing")
    .action(async (registry: string, opts: { username: string; password?: string; passwordStdin?: boolean; plainHttp?: boolean; quiet?: boolean }) => {
      const access = await accessFrom(opts);
      if (access.password === undefined) throw new CakeError("E_USAGE", "login needs --password-stdin or --password");
      const r = await login(registry, opts.username, access.password, { ...(opts.plainHttp ? { plainHttp: true } : {}) });
      say(opts, `Login Succeeded (credentials stored in ${r.storedIn})`);
    });
}
