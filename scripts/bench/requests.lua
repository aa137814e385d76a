-- wrk script for scripts/bench.py: sends pre-generated raw HTTP requests and counts answers by status.
--
--   wrk ... -s requests.lua URL -- PREFIX MODE
--
-- Thread N reads the file PREFIX.N: records of "<length>\n<raw request bytes>".
-- MODE "once":  every request is sent exactly once (unique webhook message ids); when a thread has sent
--               all of its requests it stops sending (delay() parks the connections), waits for the
--               last answers, writes PREFIX.N.done and stops. bench.py then ends wrk early with SIGINT.
-- MODE "cycle": the requests are sent round and round until wrk's duration ends.
-- done() prints one line "BENCH_JSON {...}" with the counts, the latency percentiles and the rate over
-- the span from the first request sent to the last answer received (a monotonic clock via LuaJIT's ffi),
-- which stays right when a "once" run ends before wrk's duration.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec_t;
int clock_gettime(int clock_id, bench_timespec_t *tp);
]]
local CLOCK_MONOTONIC = 1
local timespec = ffi.new("bench_timespec_t")

local function now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
  return tonumber(timespec.tv_sec) + tonumber(timespec.tv_nsec) * 1e-9
end

-- setup/done phase (the main Lua state) ------------------------------------------------------------

local threads = {}

function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

local function encode_statuses(all)
  local parts = {}
  for status, count in pairs(all) do
    table.insert(parts, string.format('"%d": %d', status, count))
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end

function done(summary, latency, requests)
  local statuses, issued, answered, finished = {}, {}, 0, true
  local first, last = nil, nil
  for _, thread in ipairs(threads) do
    table.insert(issued, thread:get("issued"))
    answered = answered + thread:get("answered")
    if not thread:get("finished") then finished = false end
    for status, count in pairs(thread:get("statuses")) do
      statuses[status] = (statuses[status] or 0) + count
    end
    local t_first, t_last = thread:get("t_first"), thread:get("t_last")
    if t_first and (first == nil or t_first < first) then first = t_first end
    if t_last and (last == nil or t_last > last) then last = t_last end
  end
  local span = (first and last and last > first) and (last - first) or 0
  io.write(string.format(
    'BENCH_JSON {"answered": %d, "issued": [%s], "finished": %s, "span_s": %.6f, ' ..
    '"wrk_requests": %d, "wrk_duration_us": %d, "statuses": %s, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
    answered, table.concat(issued, ", "), tostring(finished), span,
    summary.requests, summary.duration, encode_statuses(statuses),
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status,
    summary.errors.timeout,
    latency:percentile(50.0), latency:percentile(90.0), latency:percentile(99.0), latency.max, latency.mean))
end

-- running phase (one Lua state per thread) ---------------------------------------------------------

local data, pos, size, mode, marker
issued, answered, finished, statuses, t_first, t_last = 0, 0, false, {}, nil, nil

function init(args)
  local prefix = args[1]
  mode = args[2] or "once"
  local path = prefix .. "." .. thread_id
  local file = assert(io.open(path, "rb"))
  data = file:read("*a")
  file:close()
  pos, size = 1, #data
  marker = path .. ".done"
  if size == 0 then error("no requests in " .. path) end
end

local function exhausted()
  return pos > size
end

local function take()
  if mode == "cycle" and exhausted() then pos = 1 end
  local newline = string.find(data, "\n", pos, true)
  local length = tonumber(string.sub(data, pos, newline - 1))
  local raw = string.sub(data, newline + 1, newline + length)
  pos = newline + 1 + length
  return raw
end

-- wrk calls delay() before every request a connection sends, and request() when the delay is over. With
-- many connections per thread several delays run at once, so delay() reserves the request (or parks
-- the connection of a "once" thread that has none left) and request() sends the reserved one.
-- wrk also calls request() once at start-up, before any delay(), only to check that the request
-- parses: that call must not use up a request, since it is never sent.
local started = false
local reserved, head, tail, last = {}, 1, 0, nil

function delay()
  started = true
  if mode == "once" and exhausted() then
    return 3600 * 1000
  end
  tail = tail + 1
  reserved[tail] = take()
  return 0
end

function request()
  local raw
  if head <= tail then
    raw = reserved[head]
    reserved[head] = nil
    head = head + 1
  elseif not started then
    local saved = pos
    raw = take()
    pos = saved
    return raw
  elseif not (mode == "once" and exhausted()) then
    raw = take() -- a request without a delay (wrk does that after a socket error mid-request)
  else
    raw = last -- nothing left to send and wrk insists: a duplicate, answered "duplicate"
  end
  last = raw
  issued = issued + 1
  if t_first == nil then t_first = now() end
  return raw
end

function response(status, headers, body)
  answered = answered + 1
  statuses[status] = (statuses[status] or 0) + 1
  t_last = now()
  if mode == "once" and exhausted() and head > tail and answered >= issued and not finished then
    finished = true
    local file = io.open(marker, "w")
    if file then file:close() end
    wrk.thread:stop()
  end
end
