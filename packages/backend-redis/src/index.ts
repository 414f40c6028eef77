export { REPLY_CHANNEL_PREFIX, RedisBackend, redisStore, stateChannel, type RedisBackendOptions } from './redis-backend.js';
