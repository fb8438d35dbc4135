-- fib.lua -- naive recursive fib(N), N = arg[1] (default 35), as a Lua user
-- would write it; the same algorithm as fib.fl.
local function fib(n)
  if n < 2 then return n end
  return fib(n - 1) + fib(n - 2)
end

local n = tonumber(arg[1]) or 35
print(fib(n))
