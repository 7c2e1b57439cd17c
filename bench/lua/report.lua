-- Shared by every scenario: write wrk's summary as one JSON object to $BENCH_RESULT.
local report = {}

function report.done(summary, latency, requests)
  local out = io.open(os.getenv("BENCH_RESULT"), "w")
  local e = summary.errors
  out:write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"status_errors":%d,' ..
    '"socket_errors":%d}',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
  out:close()
end

return report
