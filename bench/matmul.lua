-- matmul.lua -- multiply N x N integer matrices (arg[1], default 200) stored
-- row by row in flat tables, REPS times (arg[2], default 10): each round
-- computes c = a * b, adds up c into the checksum and feeds c back as the
-- next a (reduced mod 97, so every value stays far below 2^53). Prints the
-- checksum. Same algorithm as matmul.fl.
local function matmul(a, b, c, n)
  for i = 0, n - 1 do
    local row = i * n
    for j = 0, n - 1 do
      local s = 0
      for k = 0, n - 1 do
        s = s + a[row + k + 1] * b[k * n + j + 1]
      end
      c[row + j + 1] = s
    end
  end
end

local n = tonumber(arg[1]) or 200
local reps = tonumber(arg[2]) or 10
local a, b, c = {}, {}, {}
for i = 0, n * n - 1 do
  a[i + 1] = (i * 37 + 11) % 97
  b[i + 1] = (i * 53 + 29) % 101
  c[i + 1] = 0
end
local sum = 0
for _ = 1, reps do
  matmul(a, b, c, n)
  for i = 1, n * n do
    sum = sum + c[i]
    a[i] = c[i] % 97
  end
end
print(sum)
