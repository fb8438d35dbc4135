-- sieve.lua -- sieve of Eratosthenes over N entries (arg[1], default 10
-- million), run REPS times (arg[2], default 4) on a fresh table each time;
-- prints the number of primes below N. Same algorithm as sieve.fl.
local function sieve(n)
  local composite = {}
  for i = 1, n do composite[i] = false end
  local count = 0
  for i = 2, n - 1 do
    if not composite[i] then
      count = count + 1
      for j = i * i, n - 1, i do composite[j] = true end
    end
  end
  return count
end

local n = tonumber(arg[1]) or 10000000
local reps = tonumber(arg[2]) or 4
local count = 0
for _ = 1, reps do count = sieve(n) end
print(count)
