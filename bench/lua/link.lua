-- POST /v2/fulfillment/users/{user_id}/link, a fresh linking token every request.
-- $BENCH_PAIRS: lines "user_id linking_token", each used once; $BENCH_AUTH: the bearer header.
package.path = os.getenv("BENCH_LUA") .. "/?.lua;" .. package.path
local report = require("report")

local pairs_ = {}
for line in io.lines(os.getenv("BENCH_PAIRS")) do
  local user, token = line:match("(%S+) (%S+)")
  pairs_[#pairs_ + 1] = {user, token}
end
local headers = {["Authorization"] = os.getenv("BENCH_AUTH"),
                 ["Content-Type"] = "application/json"}
local next_pair = 0

request = function()
  next_pair = next_pair + 1
  local pair = pairs_[next_pair]
  if pair == nil then
    -- out of tokens: an unknown token gets a 400, which marks the run as not a result
    pair = {"exhausted", "exhausted"}
  end
  return wrk.format("POST", "/v2/fulfillment/users/" .. pair[1] .. "/link", headers,
                    '{"linking_token":"' .. pair[2] .. '"}')
end

done = report.done
