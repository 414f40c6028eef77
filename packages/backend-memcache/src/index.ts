export {
  MemcacheBackend,
  type MemcacheBackendOptions,
  parseMemcacheUrl,
  CHORD_TRIGGERED_SUFFIX,
  STATE_LOCK_SUFFIX,
} from './memcache-backend.js';
