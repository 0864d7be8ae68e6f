/** Runs once per `vitest run`, before any test file: says once when vendor fixtures are absent. */
import { SHARED_FIXTURES, sharedFixturesPresent } from './helpers/shared-fixtures.ts';

export default function globalSetup(): void {
  if (!sharedFixturesPresent) {
    process.stderr.write(
      `vendor fixtures not found at ${SHARED_FIXTURES}: the tests that replay vendor-recorded payloads are skipped (everything else runs)\n`,
    );
  }
}
