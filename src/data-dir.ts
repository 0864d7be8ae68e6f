/**
 * The data directory holds approvals, the audit log and its key, the sandbox's state: it is private
 * to the service account. Directory 0700, every file 0600 — including SQLite's -wal and -shm files,
 * which SQLite creates with the database file's mode, so the database is created 0600 up front.
 */
import { accessSync, chmodSync, closeSync, constants, mkdirSync, openSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { StartupError } from './startup.ts';

export const DATABASE_FILE = 'fraudgate.db';

/** Create (or tighten) the data directory; a directory this user cannot use stops start-up with one line. */
export function prepareDataDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    accessSync(dir, constants.R_OK | constants.W_OK | constants.X_OK);
    chmodSync(dir, 0o700);
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (entry.isFile()) chmodSync(join(dir, entry.name), 0o600);
    }
    closeSync(openSync(join(dir, DATABASE_FILE), 'a', 0o600));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
    throw new StartupError(
      'FRAUDGATE_DATA_DIR',
      `cannot use the data directory ${dir} (${code}): set FRAUDGATE_DATA_DIR or --data-dir to a directory this user can read and write`,
      { cause: error },
    );
  }
}
