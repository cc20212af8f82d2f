/**
 * Checks a ModelPack config against the spec's own JSON schema (vendored in src/modelpack/schema), with
 * python's jsonschema (installed with modelpack-client by .ci/setup): the validator the spec's
 * ecosystem uses, no npm dependency for it.
 */
import { execFileSync } from "node:child_process";
import path from "node:path";
import { ROOT } from "../helpers/cli.js";

export const MODELPACK_SCHEMA = path.join(ROOT, "src", "modelpack", "schema", "config-schema.json");

const CHECK = `
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
v = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
errors = [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in v.iter_errors(json.load(sys.stdin))]
print("\\n".join(errors))
`;

/** The schema's complaints about `config` (one line each); empty when it is valid. */
export function modelPackSchemaErrors(config: Buffer | string): string[] {
  const out = execFileSync("python3", ["-c", CHECK, MODELPACK_SCHEMA], { input: config, encoding: "utf8" });
  return out.split("\n").filter(Boolean);
}
