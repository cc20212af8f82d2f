/** /metrics text: the backend counters, and backend bytes counted as upstream bytes as the help says. */
import { describe, expect, it } from "vitest";
import { Metrics } from "../../proxy/metrics.js";

const value = (text: string, name: string) => Number(new RegExp(`^${name} (\\d+)$`, "m").exec(text)?.[1]);

describe("proxy metrics", () => {
  it("counts backend hits, misses, bytes, failed and pending uploads; backend bytes are upstream bytes too", () => {
    const m = new Metrics();
    m.hubFetched(100);
    m.backendFetched(30);
    m.backendHits++;
    m.backendMisses += 2;
    m.uploadQueued();
    m.uploadQueued();
    m.uploadQueued();
    m.uploadEnded(true);
    m.uploadEnded(false);
    const text = m.prometheus(0);
    expect(value(text, "cake_proxy_upstream_bytes_total")).toBe(130);
    expect(value(text, "cake_proxy_backend_bytes_total")).toBe(30);
    expect(value(text, "cake_proxy_backend_hits_total")).toBe(1);
    expect(value(text, "cake_proxy_backend_misses_total")).toBe(2);
    expect(value(text, "cake_proxy_backend_upload_failures_total")).toBe(1);
    expect(value(text, "cake_proxy_backend_uploads_pending")).toBe(1);
    expect(text).toContain("# TYPE cake_proxy_backend_uploads_pending gauge\n");
    expect(JSON.parse(JSON.stringify(m))).toMatchObject({ backendHits: 1, backendBytes: 30, uploadsPending: 1 });
  });
});
