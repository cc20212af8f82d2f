/**
 * Paths from environment variables, read the way huggingface_hub reads its own (constants.py:
 * `os.path.expandvars(os.path.expanduser(value))`), so HF_HOME=~/hf or HF_HUB_CACHE=$SCRATCH/hub
 * mean the same folder to cake as to Python. Used for every path variable cake reads.
 */
import os from "node:os";

/** `~` and `~/…` -> the home folder; `$NAME` and `${NAME}` -> that variable when set (else left as is, as Python does). */
export function expandPath(value: string, env: NodeJS.ProcessEnv = process.env): string {
  const home = value === "~" || value.startsWith("~/") ? os.homedir() + value.slice(1) : value;
  return home.replace(/\$(\w+|\{[^}]*\})/g, (all, name: string) => {
    const v = env[name.startsWith("{") ? name.slice(1, -1) : name];
    return v === undefined ? all : v;
  });
}

/** The variable's path, expanded; undefined when it is unset or empty (the default applies). */
export function envPath(name: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const v = env[name];
  return v ? expandPath(v, env) : undefined;
}
