/**
 * The closing lines of a CI run, from vitest's JSON report (default test-results/vitest.json):
 *
 *   test files: 41 passed, 1 failed
 *   362 passed, 1 failed, 26 skipped
 *
 * A test file that fails outside any test (at import, in a hook) has no failed test in the report,
 * so it is counted as one failure on the last line: a run is never "0 failed" while a file failed.
 * A missing or unreadable report is itself a failure. Exit code 1 when anything failed.
 */
import { readFileSync } from 'node:fs';

interface Report {
  numPassedTests: number;
  numFailedTests: number;
  numPendingTests?: number;
  numTodoTests?: number;
  testResults: { name: string; status: string; assertionResults: { status: string }[] }[];
}

export function summarize(report: Report): { lines: string[]; failed: number } {
  const files = report.testResults;
  const failedFiles = files.filter((f) => f.status === 'failed');
  const failedOutsideTests = failedFiles.filter(
    (f) => !f.assertionResults.some((a) => a.status === 'failed'),
  );
  const failed = report.numFailedTests + failedOutsideTests.length;
  const skipped = (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0);
  return {
    failed,
    lines: [
      ...failedOutsideTests.map((f) => `failed outside any test (e.g. at import): ${f.name}`),
      `test files: ${files.length - failedFiles.length} passed, ${failedFiles.length} failed`,
      `${report.numPassedTests} passed, ${failed} failed` + (skipped ? `, ${skipped} skipped` : ''),
    ],
  };
}

if (import.meta.main) {
  const path = process.argv[2] ?? 'test-results/vitest.json';
  let result: { lines: string[]; failed: number };
  try {
    result = summarize(JSON.parse(readFileSync(path, 'utf8')) as Report);
  } catch (error) {
    result = {
      lines: [`no readable test report at ${path} (${(error as Error).message})`, '0 passed, 1 failed'],
      failed: 1,
    };
  }
  process.stdout.write(result.lines.join('\n') + '\n');
  process.exitCode = result.failed > 0 ? 1 : 0;
}
