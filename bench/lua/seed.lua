-- Seeding through the HTTP API, as a retailer's backend gets its linking tokens: for each pair,
-- POST /v2/fulfillment_sandbox/instacart_users/{id}/authorize (an Instacart account's consent
-- without a browser: a code), then POST /v2/oauth/token with grant_type=authorization_code (the
-- code exchanged for a linking token); and, unless $BENCH_SEED_MAKE_USERS is 0 (the users are in
-- the database already), POST /v2/fulfillment/users first (the Connect user).
--
-- wrk tells a response nothing of its request, so nothing here is per connection: each answer
-- says what it is (a code, a token or a user), a code goes on a queue that the next request of
-- any connection exchanges first, and users and tokens are paired in the order they came (any
-- fresh user goes with any fresh token). One thread (-t1) holds all the state. wrk calls
-- request() once before connecting, to check the script, and never sends that request: hence
-- one user asked for more than wanted.
--
-- $BENCH_SEED_PAIRS pairs wanted, for users "$BENCH_SEED_USER_PREFIX<n>" (n from
-- $BENCH_SEED_FIRST_USER on) and the accounts from $BENCH_SEED_FIRST_ACCOUNT on
-- ($BENCH_SEED_ACCOUNTS of them, some more than wanted: authorizations still in flight at the
-- end are wasted); $BENCH_AUTH: a client_credentials bearer; $BENCH_CLIENT_ID,
-- $BENCH_CLIENT_SECRET, $BENCH_REDIRECT_URI: the exchange's client. Done, it writes
-- "user_id linking_token" lines to $BENCH_PAIRS, then "ok N" to $BENCH_SEED_STATUS (whose
-- appearance tells run.py to stop wrk: a thread cannot end wrk's -d). Any status but 200, or an
-- answer of no known shape, writes "failed: ..." there instead and stops at once.
package.path = os.getenv("BENCH_LUA") .. "/?.lua;" .. package.path
local report = require("report")

local wanted = tonumber(os.getenv("BENCH_SEED_PAIRS"))
local next_account = tonumber(os.getenv("BENCH_SEED_FIRST_ACCOUNT"))
local last_account = next_account + tonumber(os.getenv("BENCH_SEED_ACCOUNTS")) - 1
local prefix = os.getenv("BENCH_SEED_USER_PREFIX")
local first_user = tonumber(os.getenv("BENCH_SEED_FIRST_USER"))
local redirect_uri = os.getenv("BENCH_REDIRECT_URI")
local bearer = {["Authorization"] = os.getenv("BENCH_AUTH"),
                ["Content-Type"] = "application/json"}
local plain = {["Content-Type"] = "application/json"}
local authorize_body = '{"redirect_uri":"' .. redirect_uri .. '","scope":"account_linking"}'
local exchange_body = '{"grant_type":"authorization_code","client_id":"' ..
  os.getenv("BENCH_CLIENT_ID") .. '","client_secret":"' .. os.getenv("BENCH_CLIENT_SECRET") ..
  '","redirect_uri":"' .. redirect_uri .. '","code":"'

local codes, code_head, code_tail = {}, 1, 0
local users, tokens = {}, {}
local users_asked, authorizations_asked = 0, 0
local over = false
local make_users = os.getenv("BENCH_SEED_MAKE_USERS") ~= "0"
if not make_users then
  for i = 1, wanted do
    users[i] = prefix .. (first_user + i - 1)
  end
end

local function finish(line)
  over = true
  local path = os.getenv("BENCH_SEED_STATUS")
  local status = io.open(path .. ".part", "w")
  status:write(line .. "\n")
  status:close()
  os.rename(path .. ".part", path)  -- whole when it appears
  wrk.thread:stop()
end

request = function()
  if over then
    return wrk.format("GET", "/healthz")
  end
  if code_head <= code_tail then
    local code = codes[code_head]
    codes[code_head] = nil
    code_head = code_head + 1
    return wrk.format("POST", "/v2/oauth/token", plain, exchange_body .. code .. '"}')
  end
  if make_users and users_asked <= wanted and users_asked <= authorizations_asked then
    users_asked = users_asked + 1
    return wrk.format("POST", "/v2/fulfillment/users", bearer,
                      '{"user_id":"' .. prefix .. (first_user + users_asked - 1) ..
                      '","first_name":"Bench"}')
  end
  if next_account > last_account then
    -- every account asked for and still short: a 400 that fails the seeding
    return wrk.format("POST", "/v2/fulfillment_sandbox/instacart_users/0/authorize", bearer,
                      authorize_body)
  end
  authorizations_asked = authorizations_asked + 1
  next_account = next_account + 1
  return wrk.format("POST", "/v2/fulfillment_sandbox/instacart_users/" .. (next_account - 1) ..
                    "/authorize", bearer, authorize_body)
end

response = function(status, headers, body)
  if over then
    return
  end
  local code = status == 200 and body:match('^{"code":"([%w_-]+)"}$')
  local token = status == 200 and
    body:match('^{"access_token":"([%w_-]+)","token_type":"Bearer","expires_in":86400,' ..
               '"scope":"account_linking",')
  local user = status == 200 and body:match('^{"user_id":"([^"]+)","first_name":"Bench"}$')
  if code then
    code_tail = code_tail + 1
    codes[code_tail] = code
  elseif token then
    tokens[#tokens + 1] = token
  elseif user then
    users[#users + 1] = user
  else
    finish(string.format("failed: %d %s", status, body:sub(1, 300)))
    return
  end
  if #tokens >= wanted and #users >= wanted then
    local out = io.open(os.getenv("BENCH_PAIRS"), "w")
    for i = 1, wanted do
      out:write(users[i], " ", tokens[i], "\n")
    end
    out:close()
    finish("ok " .. wanted)
  end
end

done = report.done
