/**
 * Lua scripts run with EVALSHA (ioredis `defineCommand`). Each is one atomic step on the
 * Redis server. None of them lets cjson re-encode a document: cjson turns integers beyond
 * 2^53 into doubles, so documents are only ever spliced as text.
 */

/** A JSON string literal the way `JSON.stringify` writes it (no HTML escaping). */
const JSON_STRING = String.raw`
local esc = { ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }
local function jstr(s)
  local out = string.gsub(s, '[%z\1-\31"\\]', function(c)
    return esc[c] or string.format('\\u%04x', string.byte(c))
  end)
  return '"' .. out .. '"'
end
`;

/**
 * `kept(old)`: the TaskName and CreatedAt of a stored document as their JSON text (quotes
 * included), or nil when it is not in the layout Go and machinery-ts write. A merge runs for
 * every completed task, and copying the two fields costs a state write a fifth less Redis
 * CPU than decoding the document and encoding them again. Without escapes the copy is
 * the text `jstr` would make.
 *
 * The name must follow the UUID at the start, CreatedAt precede TTL at the very end, neither
 * holding an escape or control character. In a JSON object that ends so, "CreatedAt" and
 * "TTL" are its own last keys (a nested object would end in a second brace; a quote inside a
 * string is escaped). Anything else (escapes, another key order, spaces, a nested CreatedAt
 * near the end) is left to cjson.
 */
const KEPT_FIELDS = String.raw`
local function kept(old)
  local _, _, n1, n2 = string.find(old, '^{"TaskUUID":"[^"\\%c]*","TaskName":()"[^"\\%c]*"(),"')
  if not n1 then return nil end
  local c = string.find(old, ',"CreatedAt":"', math.max(1, #old - 96), true)
  if not c then return nil end
  local _, _, c2 = string.find(old, '^[^"\\%c]*"(),"TTL":%-?%d+}$', c + 14)
  if not c2 then return nil end
  return string.sub(old, n1, n2 - 1), string.sub(old, c + 13, c2 - 1)
end
`;

/**
 * KEYS: task UUIDs, one write each (a batch of one event-loop turn).
 * ARGV: 1 expiry seconds, 2 tail (`,"TTL":0}`), then six per key:
 *   'D', a whole document, '', '', channel, sender channel — written as is (a PENDING one,
 *        or a later state merged in the process with a PENDING document of the same batch);
 *   'S', head (`{"TaskUUID":"…","TaskName":`), middle (`,"State":…,"CreatedAt":`), task name,
 *        channel, sender channel.
 * The document written is announced on each channel that is not ''.
 * An 'S' write keeps TaskName and CreatedAt from the stored document, as Go's merge does.
 */
export const SET_STATES_LUA = `${JSON_STRING}${KEPT_FIELDS}
local ttl = ARGV[1]
local tail = ARGV[2]
for i = 1, #KEYS do
  local o = 2 + (i - 1) * 6
  local text
  if ARGV[o + 1] == 'D' then
    text = ARGV[o + 2]
  else
    local name, created
    local old = redis.call('GET', KEYS[i])
    if old then name, created = kept(old) end
    if name then
      if name == '""' then name = jstr(ARGV[o + 4]) end
      if created == '""' then created = '"0001-01-01T00:00:00Z"' end
    else
      name, created = ARGV[o + 4], '0001-01-01T00:00:00Z'
      if old then
        local ok, doc = pcall(cjson.decode, old)
        if ok and type(doc) == 'table' then
          if type(doc.TaskName) == 'string' and doc.TaskName ~= '' then name = doc.TaskName end
          if type(doc.CreatedAt) == 'string' and doc.CreatedAt ~= '' then created = doc.CreatedAt end
        end
      end
      name, created = jstr(name), jstr(created)
    end
    text = ARGV[o + 2] .. name .. ARGV[o + 3] .. created .. tail
  end
  redis.call('SET', KEYS[i], text, 'EX', ttl)
  if ARGV[o + 5] ~= '' then redis.call('PUBLISH', ARGV[o + 5], text) end
  if ARGV[o + 6] ~= '' then redis.call('PUBLISH', ARGV[o + 6], text) end
end
return #KEYS
`;

/**
 * KEYS[1] group UUID.
 * ARGV: 1 'complete' | 'now', 2 member count required, 3 expiry seconds, 4 Go's redsync mutex
 * key ('' to ignore it).
 * Returns {'fired', state…} (missing states as nil) or {reason}.
 *
 * Member keys come from the group document, so they are not declared in KEYS: fine on a
 * single Redis server, not on a cluster (Go's redigo backend has the same limit with MGET).
 */
export const TRIGGER_CHORD_LUA = String.raw`
if ARGV[4] ~= '' and redis.call('EXISTS', ARGV[4]) == 1 then return {'locked'} end
local text = redis.call('GET', KEYS[1])
if not text then return {'no-group'} end
local ok, meta = pcall(cjson.decode, text)
if not ok or type(meta) ~= 'table' then return redis.error_reply('malformed group meta at ' .. KEYS[1]) end
if meta.ChordTriggered == true then return {'already-triggered'} end
local ids = meta.TaskUUIDs
if type(ids) ~= 'table' then ids = {} end
local states = {}
local n = #ids
local i = 1
while i <= n do
  local j = math.min(i + 999, n)
  local chunk = redis.call('MGET', unpack(ids, i, j))
  for k = 1, j - i + 1 do states[i + k - 1] = chunk[k] end
  i = j + 1
end
if ARGV[1] == 'complete' then
  if n < tonumber(ARGV[2]) then return {'incomplete'} end
  for k = 1, n do
    local s = states[k]
    if not s then return {'incomplete'} end
    local okd, doc = pcall(cjson.decode, s)
    if not okd or type(doc) ~= 'table' or (doc.State ~= 'SUCCESS' and doc.State ~= 'FAILURE') then
      return {'incomplete'}
    end
  end
end
local a, b = string.find(text, '"ChordTriggered":false', 1, true)
local updated
if a then
  updated = string.sub(text, 1, a - 1) .. '"ChordTriggered":true' .. string.sub(text, b + 1)
else
  meta.ChordTriggered = true
  updated = cjson.encode(meta)
end
redis.call('SET', KEYS[1], updated, 'EX', ARGV[3])
local out = {'fired'}
for k = 1, n do out[k + 1] = states[k] or false end
return out
`;

/** KEYS[1] group UUID; ARGV[1] expiry seconds. Returns 1 when a fired trigger was reset. */
export const RESET_CHORD_LUA = String.raw`
local text = redis.call('GET', KEYS[1])
if not text then return 0 end
local a, b = string.find(text, '"ChordTriggered":true', 1, true)
local updated
if a then
  updated = string.sub(text, 1, a - 1) .. '"ChordTriggered":false' .. string.sub(text, b + 1)
else
  local ok, meta = pcall(cjson.decode, text)
  if not ok or type(meta) ~= 'table' or meta.ChordTriggered ~= true then return 0 end
  meta.ChordTriggered = false
  updated = cjson.encode(meta)
end
redis.call('SET', KEYS[1], updated, 'EX', ARGV[1])
return 1
`;
