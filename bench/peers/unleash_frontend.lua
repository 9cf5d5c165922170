-- wrk script: Unleash's frontend API (evaluate every enabled toggle for one context and return the
-- ones on), GET /api/frontend?userId=<id>, a different user on every request, with the token.
--
-- wrk -s bench/peers/unleash_frontend.lua URL -- <first> <count> <step> <start> <threads> <token>
-- The users walk the same permutation as bench/rotating_users.lua (see there).

local threads_seen = 0

function setup(thread)
  thread:set("tid", threads_seen)
  threads_seen = threads_seen + 1
end

function init(args)
  first = tonumber(args[1])
  count = tonumber(args[2])
  step = tonumber(args[3])
  k = tonumber(args[4]) + tid
  stride = tonumber(args[5])
  headers = { ["Authorization"] = args[6] }
end

function request()
  local uid = first + (k * step) % count
  k = k + stride
  return wrk.format("GET", "/api/frontend?userId=" .. string.format("%d", uid), headers)
end

-- After the run: the latency histogram (microseconds:count), as bench/rotating_users.lua prints it.
function done(summary, latency, requests)
  local parts = {}
  for i = 1, #latency do
    local value, count = latency(i)
    parts[#parts + 1] = string.format("%d:%d", value, count)
  end
  io.write("latency-histogram " .. table.concat(parts, ",") .. "\n")
end
