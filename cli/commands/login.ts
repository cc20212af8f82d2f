import { Command } from "commander";
import { CakeError, credentialHost, eraseCredentials, login } from "../../src/index.js";
import { accessFrom, say } from "../context.js";
import { ask, canAsk } from "../prompt.js";

/** The user and password: given, read from stdin (--password-stdin), or asked on the terminal as docker does. */
async function credentials(opts: { username?: string; password?: string; passwordStdin?: boolean }): Promise<{ username: string; password: string }> {
  const access = await accessFrom(opts);
  let username = opts.username;
  let password = access.password;
  if ((username === undefined || password === undefined) && !canAsk()) {
    throw new CakeError("E_USAGE", "login needs -u USER and --password-stdin (or a terminal to ask on)");
  }
  username ??= (await ask("Username: ")).trim();
  if (!username) throw new CakeError("E_USAGE", "login needs a user name");
  password ??= await ask("Password: ", true);
  if (!password) throw new CakeError("E_USAGE", "login needs a password or token");
  return { username, password };
}

export function loginCommand(): Command {
  return new Command("login")
    .description("log in to a registry (asks for user and password on a terminal); credentials are stored as docker does (~/.docker/config.json or its credential store)")
    .argument("<registry>", "host[:port]")
    .option("-u, --username <user>", "user (asked on a terminal when not given)")
    .option("-p, --password <password>", "password or token (prefer --password-stdin, or let it be asked)")
    .option("--password-stdin", "read the password from standard input")
    .option("--plain-http", "use HTTP, not HTTPS (automatic for localhost and 127.0.0.0/8)")
    .option("-q, --quiet", "say nothing")
    .action(async (registry: string, opts: { username?: string; password?: string; passwordStdin?: boolean; plainHttp?: boolean; quiet?: boolean }) => {
      const { username, password } = await credentials(opts);
      const r = await login(registry, username, password, { ...(opts.plainHttp ? { plainHttp: true } : {}) });
      say(opts, `Login Succeeded (credentials stored in ${r.storedIn})`);
    });
}

export function logoutCommand(): Command {
  return new Command("logout")
    .description("forget the credentials `cake login` (or docker login) stored for a registry")
    .argument("<registry>", "host[:port]")
    .option("-q, --quiet", "say nothing")
    .action(async (registry: string, opts: { quiet?: boolean }) => {
      const from = await eraseCredentials(registry);
      say(opts, from ? `Removed login credentials for ${credentialHost(registry)} (from ${from})` : `Not logged in to ${credentialHost(registry)}`);
    });
}
