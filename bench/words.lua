-- words.lua -- build a string of N bytes (arg[1], default 50 MB) of
-- pseudo-random words and spaces from a Park-Miller LCG (every product stays
-- below 2^53, so LuaJIT's doubles agree): chunks of 4096 bytes made with
-- string.char, joined with table.concat. Then count the words (runs of
-- non-spaces) byte by byte with string.byte. Same algorithm as words.fl.
local byte, char, unpack = string.byte, string.char, table.unpack or unpack

local n = tonumber(arg[1]) or 50000000
local SPACE, A = 32, 97
local parts, chunk = {}, {}
local x, k = 42, 0
for _ = 1, n do
  x = x * 48271 % 2147483647
  k = k + 1
  if x % 8 == 0 then
    chunk[k] = SPACE
  else
    chunk[k] = A + x % 26
  end
  if k == 4096 then
    parts[#parts + 1] = char(unpack(chunk, 1, k))
    k = 0
  end
end
parts[#parts + 1] = char(unpack(chunk, 1, k))
local s = table.concat(parts)

local words, inword = 0, false
for i = 1, #s do
  if byte(s, i) == SPACE then
    inword = false
  elseif not inword then
    inword = true
    words = words + 1
  end
end
print(words)
