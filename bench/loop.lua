-- loop.lua -- 100 million iterations of integer arithmetic
local acc = 0
local i = 0
repeat
  acc = (acc + i * 3) ~ 7
  i = i + 1
until i >= 100000000
print(acc)
