-- wrk driver for scripts/load_test.sh: POSTs to /v1/caption a rotating mix of request bodies,
-- each given as an argument KIND:CONTENT-TYPE:FILE (KIND "good" or a hostile kind). Every request
-- carries X-Request-ID "KIND-N"; the service echoes it, so each answer is counted under its kind
-- and status. done() prints one line per (kind, status): "count KIND STATUS N".

local bodies = {}
local counter = 0
counts = {}

function init(args)
  for _, spec in ipairs(args) do
    local kind, ctype, path = spec:match("^([^:]+):([^:]+):(.+)$")
    local f = assert(io.open(path, "rb"))
    local data = f:read("*all")
    f:close()
    table.insert(bodies, { kind = kind, ctype = ctype, data = data })
  end
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function request()
  counter = counter + 1
  local item = bodies[(counter % #bodies) + 1]
  return wrk.format("POST", "/v1/caption?beam=1",
    { ["Content-Type"] = item.ctype, ["X-Request-ID"] = item.kind .. "-" .. counter }, item.data)
end

function response(status, headers, body)
  local id = headers["X-Request-ID"] or headers["x-request-id"] or "unknown"
  local key = (id:match("^([%a]+)") or "unknown") .. " " .. status
  counts[key] = (counts[key] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    local c = thread:get("counts")
    for key, n in pairs(c) do total[key] = (total[key] or 0) + n end
  end
  for key, n in pairs(total) do io.write(string.format("count %s %d\n", key, n)) end
  io.write(string.format("latency_ms p50 %.2f p90 %.2f p99 %.2f max %.2f\n", latency:percentile(50) / 1000,
    latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
  io.write(string.format("requests %d seconds %.1f errors connect %d read %d write %d timeout %d status %d\n",
    summary.requests, summary.duration / 1e6, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.timeout, summary.errors.status))
end
