/**
 * docs/deploy.md's YAML, checked with what is here (no docker, no Kubernetes): both blocks parse
 * (python3's yaml, anchors and merge keys included), the compose file has the registry on S3, the
 * replicas with their backend and /_cake/ready health checks, haproxy on port 5000 whose
 * configuration `haproxy -c` accepts; the Kubernetes example probes /_cake/ready and /v2/ and reads
 * the backend password from a mounted Secret.
 */
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { requireTool } from "../registry/harness.js";

type Doc = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Every ```yaml block of the page, each as its list of YAML documents. */
function yamlBlocks(file: string): Doc[][] {
  const blocks = [...fs.readFileSync(file, "utf8").matchAll(/^```yaml\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);
  const script = "import json, sys, yaml\nprint(json.dumps([list(yaml.safe_load_all(b)) for b in json.load(sys.stdin)]))";
  return JSON.parse(execFileSync("python3", ["-c", script], { input: JSON.stringify(blocks), encoding: "utf8" })) as Doc[][];
}

describe("docs/deploy.md", () => {
  const [compose, k8s] = yamlBlocks(path.resolve("docs/deploy.md"));

  it("docker-compose: distribution on S3, three replicas on it checked at /_cake/ready, haproxy on :5000", () => {
    const services = compose![0]!.services as Doc;
    expect(Object.keys(services).sort()).toEqual(["bucket", "cake1", "cake2", "cake3", "haproxy", "minio", "registry"]);
    expect(services.registry.environment).toMatchObject({ REGISTRY_STORAGE: "s3", REGISTRY_STORAGE_S3_REGIONENDPOINT: "http://minio:9000", REGISTRY_STORAGE_S3_BUCKET: "registry" });
    for (const name of ["cake1", "cake2", "cake3"]) {
      const s = services[name];
      expect(s.command).toEqual(["proxy", "--backend", "registry:5000/cake-cache", "--backend-plain-http"]);
      expect(s.healthcheck.test.join(" ")).toContain("http://127.0.0.1:5000/_cake/ready");
      expect(s.volumes).toEqual([`${name}:/data`]);
    }
    expect(services.haproxy.ports).toEqual(["5000:5000"]);
    const cfg = compose![0]!.configs.haproxy.content as string;
    expect(cfg).toContain("balance roundrobin");
    expect(cfg).toContain("option httpchk GET /_cake/ready");
    for (const name of ["cake1", "cake2", "cake3"]) expect(cfg).toContain(`server ${name} ${name}:5000`);

    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cake-deploy-"));
    try {
      fs.writeFileSync(path.join(dir, "haproxy.cfg"), cfg);
      expect(execFileSync(requireTool("haproxy"), ["-c", "-f", path.join(dir, "haproxy.cfg")], { encoding: "utf8", stdio: "pipe" })).toContain("Configuration file is valid");
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("Kubernetes: readiness on /_cake/ready, liveness on /v2/, the backend password from a Secret file", () => {
    const kinds = k8s!.map((d) => d.kind);
    expect(kinds).toEqual(["Secret", "Deployment", "Service"]);
    const pod = k8s![1]!.spec.template.spec;
    const c = pod.containers[0];
    expect(c.readinessProbe.httpGet).toEqual({ path: "/_cake/ready", port: "http" });
    expect(c.livenessProbe.httpGet).toEqual({ path: "/v2/", port: "http" });
    const env = Object.fromEntries((c.env as Doc[]).map((e) => [e.name, e.value]));
    expect(env.CAKE_PROXY_BACKEND_PASSWORD).toBeUndefined();
    const mount = (c.volumeMounts as Doc[]).find((m) => env.CAKE_PROXY_BACKEND_PASSWORD_FILE.startsWith(`${m.mountPath}/`))!;
    const volume = (pod.volumes as Doc[]).find((v) => v.name === mount.name)!;
    expect(volume.secret.secretName).toBe(k8s![0]!.metadata.name);
    expect(k8s![2]!.spec.selector).toEqual(k8s![1]!.spec.template.metadata.labels);
  });
});
