// Lint rules, including the architecture's import boundaries (shared/docs/architecture.md, "Import rules").
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const sdkOnlyInServer = {
  group: ['@modelcontextprotocol/sdk', '@modelcontextprotocol/sdk/*'],
  message:
    'Only src/server.ts and src/transports/* may import the MCP SDK, so a move to the next SDK major touches a few files.',
};

export default tseslint.config(
  { ignores: ['node_modules/**', 'dist/**', 'test-results/**', '.fraudgate/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['bin/**/*.js'],
    languageOptions: { globals: { URL: 'readonly', process: 'readonly' } },
  },
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
    },
  },
  {
    files: ['tools/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            sdkOnlyInServer,
            {
              group: ['node:fs', 'node:fs/*', 'fs', '**/governance/**'],
              message:
                'Tools stay pure: they get clients and context from the pipeline, never files or governance.',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['src/governance/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            sdkOnlyInServer,
            {
              group: ['**/clients/*', '!**/clients/types.ts'],
              message: 'Governance must not call upstreams: it stays unit-testable without HTTP.',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['src/**/*.ts'],
    ignores: ['src/server.ts', 'src/transports/**', 'src/governance/**'],
    rules: { 'no-restricted-imports': ['error', { patterns: [sdkOnlyInServer] }] },
  },
  {
    files: ['src/**/*.ts', 'tools/**/*.ts'],
    ignores: ['src/transports/stdio.ts', 'src/cli.ts', 'src/cli/**'],
    rules: {
      'no-console': ['error', { allow: ['error', 'warn'] }],
    },
  },
);
