-- wrk script: GET /api/v1/users/<id>/segments, a different user on every request.
--
-- wrk -s bench/rotating_users.lua URL -- <first> <count> <step> <start> <threads> [<path> [<authorization> [<body>]]]
-- <path> is the request path with %d for the user id (default /api/v1/users/%d/segments; the
-- peer section asks Unleash's /api/frontend?userId=%d), <authorization> an Authorization header
-- ("" for none), <body> a JSON body with %d for the user id: then the request is a POST (the
-- ofrep section: {"context":{"targetingKey":"%d"}}).
-- Request k of thread t (of <threads>) asks for user  first + ((start + t + k*threads) * step) % count.
-- With step and count coprime that walks a permutation of first .. first+count-1, scattered over
-- the range (step is about 0.618 * count), so no user repeats until <count> requests have been made;
-- the bench passes a new <start> to each run so runs do not repeat one another's users either.

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
  path = args[6] or "/api/v1/users/%d/segments"
  headers = {}
  if args[7] and args[7] ~= "" then headers["Authorization"] = args[7] end
  body = args[8]
  if body then headers["Content-Type"] = "application/json" end
end

function request()
  local uid = first + (k * step) % count
  k = k + stride
  if body then
    return wrk.format("POST", string.format(path, uid), headers, string.format(body, uid))
  end
  return wrk.format("GET", string.format(path, uid), headers)
end

-- After the run: the latency histogram (microseconds:count for every distinct value), so that the
-- bench can merge several runs and compute exact percentiles over all of them.
function done(summary, latency, requests)
  local parts = {}
  for i = 1, #latency do
    local value, count = latency(i)
    parts[#parts + 1] = string.format("%d:%d", value, count)
  end
  io.write("latency-histogram " .. table.concat(parts, ",") .. "\n")
end
