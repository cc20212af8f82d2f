/**
 * Where the Hub is and who we are to it, the way huggingface_hub decides: HF_ENDPOINT (default
 * https://huggingface.co), HF_TOKEN, else the token file ($HF_TOKEN_PATH or $HF_HOME/token), and
 * HF_HUB_OFFLINE (1/true/yes/on: never ask the Hub; what the store holds is used).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

export interface HubParams {
  hubUrl: string;
  accessToken?: string;
  signal?: AbortSignal;
  /** HF_HUB_OFFLINE: no request goes to the Hub (each fails with E_OFFLINE before it is sent). */
  offline?: boolean;
}

export function hfHome(): string {
  return process.env.HF_HOME || path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache"), "huggingface");
}

export function hubParamsFromEnv(): HubParams {
  const hubUrl = (process.env.HF_ENDPOINT || "https://huggingface.co").replace(/\/+$/, "");
  let accessToken = process.env.HF_TOKEN || process.env.HUGGING_FACE_HUB_TOKEN;
  if (!accessToken) {
    const file = process.env.HF_TOKEN_PATH || path.join(hfHome(), "token");
    try {
      accessToken = fs.readFileSync(file, "utf8").trim() || undefined;
    } catch {
      /* no token file: anonymous */
    }
  }
  const offline = ["1", "ON", "YES", "TRUE"].includes((process.env.HF_HUB_OFFLINE ?? "").toUpperCase()); // huggingface_hub's spelling of true
  return { hubUrl, ...(accessToken ? { accessToken } : {}), ...(offline ? { offline } : {}) };
}
