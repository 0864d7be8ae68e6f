/**
 * CLI conventions shared by every command: a usage error (exit 2, with a pointer to the command's
 * `--help`) as opposed to a runtime failure (exit 1, one line).
 */
import { InvalidInputError, type FieldIssue } from '../errors.ts';

/** Missing or malformed command-line arguments: printed with a pointer to `--help`, exit code 2. */
export class UsageError extends InvalidInputError {
  constructor(issues: FieldIssue[], prefix = 'Usage') {
    super(issues, prefix);
    this.name = 'UsageError';
  }
}
