/** The proxy's counters, served as Prometheus text at /metrics and as JSON in /_cake/status. */
export class Metrics {
  requests = 0;
  conversions = 0;
  cacheHits = 0;
  /** Tensor and file bytes fetched from the Hub (or the backend). */
  upstreamBytes = 0;
  /** Blob and manifest body bytes sent to clients. */
  servedBytes = 0;
  errors = 0;

  prometheus(inFlight: number): string {
    const line = (name: string, help: string, type: string, v: number) => `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n${name} ${v}\n`;
    return [
      line("cake_proxy_requests_total", "HTTP requests answered", "counter", this.requests),
      line("cake_proxy_errors_total", "requests answered with an error", "counter", this.errors),
      line("cake_proxy_conversions_total", "Hub revisions converted", "counter", this.conversions),
      line("cake_proxy_conversions_in_flight", "conversions running now", "gauge", inFlight),
      line("cake_proxy_cache_hits_total", "manifests and blobs served from the store", "counter", this.cacheHits),
      line("cake_proxy_upstream_bytes_total", "bytes fetched from the Hub or the backend", "counter", this.upstreamBytes),
      line("cake_proxy_served_bytes_total", "body bytes sent to clients", "counter", this.servedBytes),
    ].join("");
  }

  toJSON() {
    return { ...this };
  }
}
