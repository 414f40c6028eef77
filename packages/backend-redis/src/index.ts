export { RedisBackend, stateChannel, type RedisBackendOptions } from './redis-backend.js';
