import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Two cores: the end-to-end tests spawn servers; keep parallelism honest.
    maxWorkers: 2,
    reporters: ['default'],
  },
});
