-- calls.lua -- N calls (arg[1], default 50 million) of a small function of
-- two arguments; prints the sum it builds, mod 1000000007 (the sum stays
-- below 2^53, so LuaJIT's doubles agree). Same algorithm as calls.fl.
local function add(a, b)
  return a + b
end

local n = tonumber(arg[1]) or 50000000
local s = 0
for i = 0, n - 1 do
  s = add(s, i)
end
print(s % 1000000007)
