-- wrk script of benchmarks/ingress.py: POSTs pre-signed Twilio status callbacks, each once.
--
--   wrk -t2 -c64 -d10s --latency -s ingress.lua URL -- SLICE_PREFIX
--
-- Thread i reads SLICE_PREFIX.<i>: one callback per line, "id signature token body" (the body
-- is urlencoded, so it has no spaces). The threads' files are disjoint, so no two requests of a
-- run carry the same callback; a thread that reaches the end of its file starts over and counts
-- a wrap (the harness then reports that the file was too short). done() writes a JSON summary to
-- $BENCH_SUMMARY and, when $BENCH_IDS is set, the X-Request-Id of every 2xx answer to that file.

local threads = {}
local thread_count = 0

function setup(thread)
   thread:set("thread_index", thread_count)
   thread_count = thread_count + 1
   table.insert(threads, thread)
end

local path = "/twilio/messaging/status"

function init(args)
   -- Lines are read as requests go (no load before the first request: wrk starts thread 0
   -- before it runs the next thread's init and before its clock starts).
   file_name = args[1] .. "." .. thread_index
   file = assert(io.open(file_name, "r"))
   record = os.getenv("BENCH_IDS") ~= nil and os.getenv("BENCH_IDS") ~= ""
   wraps = 0
   sent = 0
   responses = 0
   ok = 0
   statuses = {}
   ok_ids = {}
   headers = {
      ["Content-Type"] = "application/x-www-form-urlencoded",
      ["User-Agent"] = "TwilioProxy/1.1",
      ["Accept"] = "*/*",
   }
end

local function next_line()
   local line = file:read("*l")
   if line == nil then
      file:seek("set", 0)
      wraps = wraps + 1
      line = file:read("*l")
      if line == nil then
         error("no callbacks in " .. file_name)
      end
   end
   return line
end

function request()
   local id, sig, token, body = next_line():match("^(%S+) (%S+) (%S+) (%S+)$")
   sent = sent + 1
   headers["X-Twilio-Signature"] = sig
   headers["I-Twilio-Idempotency-Token"] = token
   headers["X-Request-Id"] = id
   return wrk.format("POST", path, headers, body)
end

function response(status, resp_headers, body)
   responses = responses + 1
   if status >= 200 and status < 300 then
      ok = ok + 1
      if record then
         ok_ids[ok] = resp_headers["x-request-id"] or resp_headers["X-Request-Id"] or "?"
      end
   else
      statuses[status] = (statuses[status] or 0) + 1
   end
end

function done(summary, latency, requests)
   local totals = {sent = 0, responses = 0, ok = 0, wraps = 0}
   local non2xx = {}
   local ids_path = os.getenv("BENCH_IDS")
   local ids_file = nil
   if ids_path ~= nil and ids_path ~= "" then
      ids_file = assert(io.open(ids_path, "w"))
   end
   for _, thread in ipairs(threads) do
      totals.sent = totals.sent + thread:get("sent")
      totals.responses = totals.responses + thread:get("responses")
      totals.ok = totals.ok + thread:get("ok")
      totals.wraps = totals.wraps + thread:get("wraps")
      for status, n in pairs(thread:get("statuses")) do
         non2xx[status] = (non2xx[status] or 0) + n
      end
      if ids_file then
         local got = thread:get("ok_ids")
         for i = 1, #got do
            ids_file:write(got[i], "\n")
         end
      end
   end
   if ids_file then
      ids_file:close()
   end
   local parts = {}
   for status, n in pairs(non2xx) do
      table.insert(parts, string.format('"%d": %d', status, n))
   end
   local e = summary.errors
   local out = assert(io.open(os.getenv("BENCH_SUMMARY"), "w"))
   out:write(string.format(
      '{"duration_us": %d, "requests": %d, "bytes": %d, "sent": %d, "responses": %d, ' ..
      '"ok": %d, "wraps": %d, "non2xx": {%s}, ' ..
      '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
      '"latency_us": {"min": %d, "mean": %.1f, "max": %d, "stdev": %.1f, ' ..
      '"p50": %d, "p90": %d, "p99": %d, "p999": %d}}\n',
      summary.duration, summary.requests, summary.bytes, totals.sent, totals.responses,
      totals.ok, totals.wraps, table.concat(parts, ", "),
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency.max, latency.stdev,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9)))
   out:close()
end
