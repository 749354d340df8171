// `lightcap serve`: the HTTP service (docs/SERVER.md) on one shared Captioner.

import ArgumentParser
import Dispatch
import Foundation
import LightCap
import LightCapCore
import LightCapServer

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve captions over HTTP: POST /v1/caption, /v1/captions; GET /v1/health, /v1/model, /healthz, /readyz.",
        discussion: "Stops on SIGINT or SIGTERM after the requests in flight are answered. See docs/SERVER.md.")

    @Option(help: "Address to bind. Keep the loopback default unless a proxy in front handles exposure.")
    var host: String = "127.0.0.1"

    @Option(help: "TCP port.")
    var port: Int = 8080

    @Option(name: .long, help: ArgumentHelp("Model directory (config.json, model.safetensors, vocab.txt, concepts.txt).",
                                            discussion: "Default: $LIGHTCAP_MODEL, else models/default.",
                                            valueName: "dir"))
    var model: String?

    @Option(name: .customLong("max-body-mb"), help: "Largest request body in MiB (larger ones get 413).")
    var maxBodyMB: Double = 32

    @Option(help: "Worker threads computing captions. Default: the number of cores.")
    var concurrency: Int = ProcessInfo.processInfo.activeProcessorCount

    @Option(name: .customLong("max-batch"), help: "Most requests a worker captions together (greedy decoding runs them through the fusion model at once); 1: one at a time.")
    var maxBatch: Int = 8

    @Option(name: .customLong("batch-window-ms"), help: "Milliseconds a free worker waits after a request arrives for others to batch with it (only while another worker is busy).")
    var batchWindowMs: Double = 2

    @Option(help: "Threads for the kernels (oneDNN) in each caption.")
    var threads: Int = 1

    @Option(help: ArgumentHelp("Which kernels compute the backbone's convolutions: exact or lightcap-winograd (faster on large models); as for caption.",
                               valueName: "kind"))
    var convolutions: ConvolutionPolicy = .exact

    @Option(name: .customLong("fusion-weights"), help: ArgumentHelp("What the fusion layers read at each decoding step: f32 (exact) or int8 (faster); as for caption.",
                                                                     valueName: "kind"))
    var fusionWeights: FusionWeights = .f32

    @Option(name: .customLong("max-queue"), help: "Requests that may wait for a worker; more get 503 with Retry-After.")
    var maxQueue: Int = 64

    @Option(name: .customLong("timeout"), help: "Seconds a caption may take, waiting included; past it 503 and the work stops.")
    var timeout: Double = 30

    @Option(name: .customLong("body-timeout"), help: "Seconds a request body may take to arrive; past it 408.")
    var bodyTimeout: Double = 30

    @Option(name: .customLong("max-megapixels"), help: "Largest image in megapixels, checked on its header before decoding.")
    var maxMegapixels: Double = 100

    @Option(name: .customLong("max-images"), help: "Most images in one POST /v1/captions request.")
    var maxImages: Int = 16

    @Option(name: .customLong("api-key"), help: ArgumentHelp(
        "Require Authorization: Bearer KEY on every route but /healthz and /readyz. Default: $LIGHTCAP_API_KEY if set.",
        valueName: "key"))
    var apiKey: String?

    @Option(name: .customLong("cors-origin"), help: ArgumentHelp(
        "An origin browsers may call the service from (repeat it; '*' for any).", valueName: "origin"))
    var corsOrigins: [String] = []

    func validate() throws {
        guard (1...65535).contains(port) else { throw ValidationError("--port must lie in 1...65535, got \(port)") }
        guard maxBodyMB > 0, maxBodyMB <= 1024 else {
            throw ValidationError("--max-body-mb must lie in (0, 1024], got \(maxBodyMB)")
        }
        guard concurrency >= 1 else { throw ValidationError("--concurrency must be at least 1, got \(concurrency)") }
        guard (1...256).contains(maxBatch) else { throw ValidationError("--max-batch must lie in 1...256, got \(maxBatch)") }
        guard batchWindowMs >= 0, batchWindowMs <= 1000 else {
            throw ValidationError("--batch-window-ms must lie in [0, 1000], got \(batchWindowMs)")
        }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1, got \(threads)") }
        guard maxQueue >= 0 else { throw ValidationError("--max-queue must be 0 or more, got \(maxQueue)") }
        guard timeout > 0, bodyTimeout > 0 else { throw ValidationError("--timeout and --body-timeout must be positive") }
        guard maxMegapixels > 0, maxMegapixels <= 1000 else { throw ValidationError("--max-megapixels must lie in (0, 1000]") }
        guard maxImages >= 1 else { throw ValidationError("--max-images must be at least 1, got \(maxImages)") }
        if let apiKey, apiKey.isEmpty { throw ValidationError("--api-key must not be empty") }
    }

    func run() throws {
        let directory: URL
        if let model {
            directory = URL(fileURLWithPath: model)
        } else if let found = defaultModelDirectory() {
            directory = found
        } else {
            throw ValidationError("no model: pass --model DIR or set LIGHTCAP_MODEL (models/default was not found)")
        }
        let captioner = try Captioner(modelDirectory: directory, threads: threads, convolutions: convolutions, fusionWeights: fusionWeights)
        let key = apiKey ?? ProcessInfo.processInfo.environment["LIGHTCAP_API_KEY"].flatMap { $0.isEmpty ? nil : $0 }
        let configuration = ServerConfiguration(
            host: host, port: port, maxBodyBytes: Int(maxBodyMB * 1024 * 1024), maxConcurrentCaptions: concurrency,
            maxBatchSize: maxBatch, batchWindow: batchWindowMs / 1000, maxQueuedRequests: maxQueue, maxImagesPerRequest: maxImages, requestTimeout: timeout, bodyTimeout: bodyTimeout,
            maxPixels: Int(maxMegapixels * 1_000_000), apiKey: key, corsOrigins: corsOrigins, modelDirectory: directory)
        let app = try buildApplication(captioner: captioner, configuration: configuration)
        print("lightcap serve: model \(captioner.configuration.name) from \(directory.path), "
              + "http://\(host):\(port)/v1/caption, \(concurrency) workers, batches of up to \(maxBatch) (window \(batchWindowMs) ms), body limit \(configuration.maxBodyBytes) bytes")
        // The root command is synchronous: run the service in a task and wait for it here.
        let outcome = Outcome()
        Task {
            do { try await app.runService() } catch { outcome.error = error }
            outcome.done.signal()
        }
        outcome.done.wait()
        if let error = outcome.error { throw error }
    }
}

/// How the service task ended (written once by the task, read after `done`).
private final class Outcome: @unchecked Sendable {
    var error: (any Error)?
    let done = DispatchSemaphore(value: 0)
}
