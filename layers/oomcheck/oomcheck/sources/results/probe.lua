-- One step of the result-backend scan, run on the server (see scan.py for how it is used).
-- KEYS: none (SCAN names them). ARGV: cursor, pattern, count, probe, head, tail byte counts.
-- Reply: {next_cursor, keys_seen, skipped, key1, pttl1, len1, head1, tail1, key2, ...}.
-- The per-key path is what the whole scan costs, so for Celery's own layout it is one GETRANGE
-- and one comparison: a probe of exactly the length of '{"status": "STARTED"' is interned by Lua,
-- so comparing it with the constants is a pointer comparison. Patterns run only for other
-- layouts (compact JSON, another key first). GETRANGE goes through pcall so that a key of another
-- type is counted as skipped instead of failing the batch. Numbers go in as strings: Lua would
-- otherwise format them on every call.
local pcall, call, find, match, sub = redis.pcall, redis.call, string.find, string.match, string.sub
local scan = call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local keys = scan[2]
local probe_len, head_len = tonumber(ARGV[4]), tonumber(ARGV[5])
local zero, probe_last = '0', tostring(probe_len - 1)
local head_last, tail_from = tostring(head_len - 1), tostring(-tonumber(ARGV[6]))
local SUCCESS = '{"status": "SUCCESS"'
local STARTED = '{"status": "STARTED"'
local FAILURE = '{"status": "FAILURE"'
local out = {scan[1], #keys, 0}
local n = 3
local skipped = 0
for i = 1, #keys do
  local key = keys[i]
  local probe = pcall('GETRANGE', key, zero, probe_last)
  local kind = 0  -- 0 nothing to do, 1 STARTED, 2 FAILURE (look closer), 3 unknown layout
  if probe == SUCCESS then
    kind = 0
  elseif probe == STARTED then
    kind = 1
  elseif probe == FAILURE then
    kind = 2
  elseif type(probe) ~= 'string' then
    skipped = skipped + 1
  elseif probe ~= '' and sub(probe, 1, 12) ~= '{"status": "' then
    local status = match(probe, '^%s*{%s*"status"%s*:%s*"([^"]*)"')
    if status == 'STARTED' then
      kind = 1
    elseif status == 'FAILURE' then
      kind = 2
    elseif status == nil and not match(probe, '^%s*{%s*"status"%s*:%s*"[^"]*$') then
      if find(probe, '^%s*{') then kind = 3 else skipped = skipped + 1 end
    end
  end
  if kind ~= 0 then
    local size = call('STRLEN', key)
    local head = probe
    if size > probe_len then
      head = call('GETRANGE', key, zero, head_last)
    end
    if kind == 2 and not find(head, 'WorkerLostError', 1, true) then
      kind = 0
    end
    if kind ~= 0 then
      local tail = ''
      if size > head_len then
        tail = call('GETRANGE', key, tail_from, '-1')
      end
      out[n + 1] = key
      out[n + 2] = call('PTTL', key)
      out[n + 3] = size
      out[n + 4] = head
      out[n + 5] = tail
      n = n + 5
    end
  end
end
out[3] = skipped
return out
