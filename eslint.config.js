// ESLint (flat config), run by `npm test` before the tests: a finding fails the run.
// Only rules that catch real defects here, type-aware where they need the types:
// - import-x/no-cycle: a module that imports itself back through others can see its
//   imports uninitialized, depending on which module was loaded first (the engine's format
//   registry once threw "Cannot access 'qcow2Driver' before initialization" that way);
// - @typescript-eslint/no-floating-promises: a promise nobody awaits or handles loses its
//   rejection (an unhandled rejection ends the process) and its ordering;
// - @typescript-eslint/no-misused-promises: a promise where a plain value is expected (an
//   async callback to an EventEmitter or a condition) is never awaited.
// Types come from each package's own tsconfig (tests included) through the project service.
import tseslint from 'typescript-eslint';
import { importX } from 'eslint-plugin-import-x';
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';

export default tseslint.config(
  {
    ignores: ['**/dist/**', '**/node_modules/**', '**/build/**', 'bench/work/**'],
  },
  {
    files: ['packages/**/*.ts', 'packages/**/*.tsx'],
    languageOptions: {
      parser: tseslint.parser,
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { '@typescript-eslint': tseslint.plugin, 'import-x': importX },
    settings: {
      // Without the parser named here, no-cycle cannot read the modules an import leads to and
      // silently finds nothing.
      'import-x/parsers': { '@typescript-eslint/parser': ['.ts', '.tsx'] },
      'import-x/extensions': ['.ts', '.tsx', '.js'],
      'import-x/resolver-next': [createTypeScriptImportResolver({ project: ['packages/*/tsconfig.json', 'packages/web/app/tsconfig.json'], noWarnOnMultipleProjects: true })],
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      'import-x/no-cycle': ['error', { ignoreExternal: true }],
      // node:test's test()/describe() return promises the runner itself awaits.
      '@typescript-eslint/no-floating-promises': ['error', {
        allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['test', 'it', 'describe', 'suite'] }],
      }],
      '@typescript-eslint/no-misused-promises': 'error',
    },
  },
);
