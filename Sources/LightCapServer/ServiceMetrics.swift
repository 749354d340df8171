// ServiceMetrics: what `GET /metrics` reports, in the Prometheus text format (swift-prometheus's
// registry, one per service): requests by route, method and status with their latency; the time
// of each caption stage (queue, decode, preprocess, backbone, concepts, fusion, total); images per
// decoding batch and per `POST /v1/captions`; and, read at each scrape, the captions in flight and
// the requests waiting.

import Prometheus

/// The service's metrics. Thread-safe (the registry and its metrics are).
final class ServiceMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    /// Routes reported by name; any other path counts as "other" (no label per unknown path).
    static let routes: Set<String> = ["/", "/v1/caption", "/v1/captions", "/v1/health", "/v1/model", "/healthz",
                                      "/readyz", "/metrics"]
    /// Seconds: 0.5 ms to 10 s.
    static let secondsBuckets: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
    static let batchBuckets: [Double] = [1, 2, 4, 8, 16, 32, 64]

    private static func name(_ metric: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "lightcap", metricName: metric, unitName: unit, helpText: help)
    }

    /// One answered request.
    func request(method: String, path: String, status: Int, seconds: Double) {
        let route = Self.routes.contains(path) ? path : "other"
        registry.makeCounter(descriptor: Self.name("http_requests", "total", "HTTP requests answered, by route, method and status"),
                             labels: [("route", route), ("method", method), ("status", String(status))]).increment()
        registry.makeValueHistogram(descriptor: Self.name("http_request_duration", "seconds", "Time from request to answer, by route"),
                                    labels: [("route", route)], buckets: Self.secondsBuckets).record(seconds)
    }

    /// One caption's stages (milliseconds, as `Caption.timings` and the answer's `timings`).
    func caption(timings: [String: Double]) {
        for (stage, ms) in timings {
            registry.makeValueHistogram(descriptor: Self.name("caption_stage_duration", "seconds", "Time of each caption stage"),
                                        labels: [("stage", stage)], buckets: Self.secondsBuckets).record(ms / 1000)
        }
    }

    /// The images of one `POST /v1/captions` request.
    func request(images: Int) {
        registry.makeValueHistogram(descriptor: Self.name("request", "images", "Images per POST /v1/captions request"),
                                    labels: [], buckets: Self.batchBuckets).record(Double(images))
    }

    /// One batch run by a worker (CaptionBatcher).
    func batch(size: Int) {
        registry.makeValueHistogram(descriptor: Self.name("batch", "images", "Images captioned together in one batch"),
                                    labels: [], buckets: Self.batchBuckets).record(Double(size))
    }

    /// The exposition, with the gauges set to `active` captions and `waiting` requests.
    func exposition(active: Int, waiting: Int) -> String {
        registry.makeGauge(descriptor: Self.name("captions_in_flight", "", "Captions being computed now"), labels: [])
            .set(to: Double(active))
        registry.makeGauge(descriptor: Self.name("queue_depth", "requests", "Requests waiting for a worker"), labels: [])
            .set(to: Double(waiting))
        return registry.emitToString()
    }
}
