-- wrk script for bench/loadgen.py: POST a new referral (unique person, unique Idempotency-Key)
-- with a bearer token from $WRK_TOKEN; the path comes from the URL given to wrk.
-- Prints one "JSON {...}" line with the figures bench/loadgen.py reads.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

local counter = 0
local postcodes = {"PR1 3BQ", "BB2 2DH", "FY1 1EJ", "LA9 4DL", "LA1 1HP", "BB11 1BS"}

function init(args)
  math.randomseed(os.time() + (tid or 0))
end

request = function()
  counter = counter + 1
  local key = string.format("wrk%s%02d%09d", os.getenv("WRK_RUN") or "run", tid or 0, counter)
  local body = string.format(
    '{"person":{"given_name":"Wrk%s","family_name":"Load","birth_date":"%d-%02d-%02d","postcode":"%s"},'
      .. '"source":"gp","needs":["low_mood"],"risks":[],"consent_to_share":true}',
    key, math.random(1940, 2005), math.random(1, 12), math.random(1, 28), postcodes[math.random(1, 6)])
  local headers = {["Content-Type"] = "application/json", ["Idempotency-Key"] = key}
  local token = os.getenv("WRK_TOKEN")
  if token and token ~= "" then
    headers["Authorization"] = "Bearer " .. token
  end
  return wrk.format("POST", nil, headers, body)
end

done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'JSON {"requests":%d,"duration_us":%d,"non2xx":%d,"socket_errors":%d,'
      .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, errors.status,
    errors.connect + errors.read + errors.write + errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
