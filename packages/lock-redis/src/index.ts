export { RedisLock, type RedisLockOptions } from './redis-lock.js';
