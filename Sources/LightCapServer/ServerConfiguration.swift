// ServerConfiguration: the settings of the HTTP service (`lightcap serve`'s flags).

import Foundation

/// Settings of the HTTP service.
public struct ServerConfiguration: Sendable {
    /// Address to bind (loopback by default).
    public var host: String
    /// TCP port (0 picks a free one).
    public var port: Int
    /// Largest accepted request body in bytes (default 32 MiB); larger bodies get 413.
    public var maxBodyBytes: Int
    /// Worker threads computing captions (default: the number of cores).
    public var maxConcurrentCaptions: Int
    /// Most requests one worker captions together in a batch (1: one at a time).
    public var maxBatchSize: Int
    /// Seconds a free worker waits after a request arrived for others to batch with it (only
    /// while another worker is busy: a lone request never waits).
    public var batchWindow: Double
    /// Requests allowed to wait for a free slot; more get 503.
    public var maxQueuedRequests: Int
    /// Largest `beam` a request may ask for.
    public var maxBeamSize: Int
    /// Most images in one `POST /v1/captions` request.
    public var maxImagesPerRequest: Int
    /// Seconds a caption may take, waiting for a slot included; past it the answer is 503 and
    /// the work stops at its next step.
    public var requestTimeout: Double
    /// Seconds a request body may take to arrive (a client trickling bytes gets 408).
    public var bodyTimeout: Double
    /// Largest image (width x height) accepted, checked on the header before decoding.
    public var maxPixels: Int
    /// When set, every route but /healthz and /readyz needs `Authorization: Bearer <key>`.
    public var apiKey: String?
    /// Origins allowed to call the service from a browser (CORS); `*` allows any.
    public var corsOrigins: [String]
    /// The model directory, for `GET /v1/model` (parameter count); nil leaves it out.
    public var modelDirectory: URL?

    public init(host: String = "127.0.0.1", port: Int = 8080, maxBodyBytes: Int = 32 << 20,
                maxConcurrentCaptions: Int = ProcessInfo.processInfo.activeProcessorCount,
                maxBatchSize: Int = 8, batchWindow: Double = 0.002,
                maxQueuedRequests: Int = 64, maxBeamSize: Int = 16, maxImagesPerRequest: Int = 16,
                requestTimeout: Double = 30, bodyTimeout: Double = 30, maxPixels: Int = 100_000_000,
                apiKey: String? = nil, corsOrigins: [String] = [], modelDirectory: URL? = nil) {
        self.host = host
        self.port = port
        self.maxBodyBytes = maxBodyBytes
        self.maxConcurrentCaptions = maxConcurrentCaptions
        self.maxBatchSize = maxBatchSize
        self.batchWindow = batchWindow
        self.maxQueuedRequests = maxQueuedRequests
        self.maxBeamSize = maxBeamSize
        self.maxImagesPerRequest = maxImagesPerRequest
        self.requestTimeout = requestTimeout
        self.bodyTimeout = bodyTimeout
        self.maxPixels = maxPixels
        self.apiKey = apiKey
        self.corsOrigins = corsOrigins
        self.modelDirectory = modelDirectory
    }
}
