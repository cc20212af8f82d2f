/** The servers a scenario starts, each closed at its scratch's cleanup. */
import { startHub, type Hub, type HubOptions } from "../../test/hub/emulator.js";
import { startRegistry, type RunningRegistry } from "../../test/registry/harness.js";
import type { Scratch } from "./proc.js";

/** The Hub emulation with the model folder `dir` committed as `repo`. */
export async function hubWith(scratch: Scratch, repo: string, dir: string, opts: HubOptions = {}): Promise<Hub> {
  const hub = await startHub(opts);
  scratch.defer(() => hub.close());
  await hub.commit(repo, dir);
  return hub;
}

/** A CNCF distribution registry on loopback. */
export async function registryIn(scratch: Scratch): Promise<RunningRegistry> {
  const reg = await startRegistry();
  scratch.defer(() => reg.close());
  return reg;
}
