/**
 * The proxy's counters, served as Prometheus text at /metrics and as JSON in /_cake/status.
 * Routes and the service change them through the fields below or, where two must move together
 * (backend bytes are upstream bytes too; an upload leaves the queue as done or failed), the methods.
 */
export class Metrics {
  requests = 0;
  conversions = 0;
  cacheHits = 0;
  /** Tensor and file bytes fetched from the Hub or the backend (backendBytes is the backend's part). */
  upstreamBytes = 0;
  /** Blob and manifest body bytes sent to clients. */
  servedBytes = 0;
  errors = 0;
  /** Revisions another replica had converted: taken from the backend instead of converted here. */
  backendHits = 0;
  /** Revisions the backend lacked (or could not give): converted from the Hub. */
  backendMisses = 0;
  /** Bytes fetched from the backend: manifests' config and recipe, and blobs refetched from it. */
  backendBytes = 0;
  /** Pushes of a converted revision to the backend that failed. */
  uploadFailures = 0;
  /** Pushes to the backend queued or running now (a gauge). */
  uploadsPending = 0;

  /** Bytes that came from the Hub. */
  hubFetched(bytes: number): void {
    this.upstreamBytes += bytes;
  }

  /** Bytes that came from the backend: counted as upstream bytes too. */
  backendFetched(bytes: number): void {
    this.backendBytes += bytes;
    this.upstreamBytes += bytes;
  }

  /** A push to the backend is queued (or starts right away). */
  uploadQueued(): void {
    this.uploadsPending++;
  }

  /** A push queued with uploadQueued ended, well or not. */
  uploadEnded(ok: boolean): void {
    this.uploadsPending--;
    if (!ok) this.uploadFailures++;
  }

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
      line("cake_proxy_backend_hits_total", "revisions taken from the backend registry instead of converted", "counter", this.backendHits),
      line("cake_proxy_backend_misses_total", "revisions the backend registry lacked, converted here", "counter", this.backendMisses),
      line("cake_proxy_backend_bytes_total", "bytes fetched from the backend registry (part of upstream bytes)", "counter", this.backendBytes),
      line("cake_proxy_backend_upload_failures_total", "pushes of a converted revision to the backend that failed", "counter", this.uploadFailures),
      line("cake_proxy_backend_uploads_pending", "pushes to the backend queued or running now", "gauge", this.uploadsPending),
    ].join("");
  }

  toJSON() {
    return { ...this };
  }
}
