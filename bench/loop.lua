-- loop.lua -- N iterations (arg[1], default 100 million) of integer
-- arithmetic on one accumulator; the same algorithm as loop.fl. Every value
-- stays below 2^53, so LuaJIT's doubles give the same answer.
local n = tonumber(arg[1]) or 100000000
local acc = 0
for i = 0, n - 1 do
  acc = (acc + i * 3) % 1000003
end
print(acc)
