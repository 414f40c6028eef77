import { defineConfig, mergeConfig } from 'vitest/config';
import shared from '../../vitest.shared.ts';

// One file at a time: restart.test.ts restarts RabbitMQ, which would cut the other files'
// connections (and their timing bounds) if they ran beside it.
export default mergeConfig(shared, defineConfig({ test: { fileParallelism: false } }));
