/**
 * Vitest setup: the tests talk to servers on loopback, so a proxy set on the machine running them
 * (HTTPS_PROXY and the others, which cake honours) is dropped, for this process and the cake
 * processes it spawns. test/http/proxy-env.test.ts sets the variables it tests per command.
 */
for (const name of ["http_proxy", "https_proxy", "all_proxy", "no_proxy"]) {
  delete process.env[name];
  delete process.env[name.toUpperCase()];
}
