-- wrk script for bench/run.py: replays prepared requests, each at most once, and prints a JSON summary.
-- BENCH_REQUESTS names a file of "METHOD PATH [BODY]" lines; thread i of BENCH_THREADS takes lines i, i+n, ...
-- A thread that runs out stops (and says so), so a single-use link is never sent twice.
-- A POST body is form-encoded unless BENCH_HEADERS says otherwise: BENCH_HEADERS holds "Name: value" lines sent
-- with every request (e.g. "Content-Type: application/json" and "Authorization: Bearer ..."); BENCH_COOKIE a cookie.

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local count = tonumber(os.getenv("BENCH_THREADS"))
  queue, position, exhausted = {}, 0, 0
  cycle = os.getenv("BENCH_CYCLE") == "1"  -- page views may repeat a link
  local extra = {}
  for header in (os.getenv("BENCH_HEADERS") or ""):gmatch("[^\n]+") do
    local name, value = header:match("^([^:]+):%s*(.-)%s*$")
    if name then
      extra[name] = value
    end
  end
  local index = 0
  for line in io.lines(os.getenv("BENCH_REQUESTS")) do
    if index % count == id then
      local method, path, body = line:match("^(%S+) (%S+) ?(.*)$")
      local headers = {}
      if os.getenv("BENCH_COOKIE") then
        headers["Cookie"] = os.getenv("BENCH_COOKIE")
      end
      if method == "POST" then
        headers["Content-Type"] = "application/x-www-form-urlencoded"
      else
        body = nil
      end
      for name, value in pairs(extra) do
        headers[name] = value
      end
      table.insert(queue, wrk.format(method, path, headers, body))
    end
    index = index + 1
  end
end

function request()
  position = position + 1
  if cycle and position > #queue then
    position = 1
  end
  if position > #queue then
    exhausted = 1
    wrk.thread:stop()
    return queue[#queue]
  end
  return queue[position]
end

function done(summary, latency, requests)
  local spent = 0
  for _, thread in ipairs(threads) do
    spent = spent + thread:get("exhausted")
  end
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, ' ..
    '"timeout": %d, "p50_us": %d, "p99_us": %d, "exhausted_threads": %d}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout, latency:percentile(50), latency:percentile(99), spent))
end
