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

/**
 * The subcommand `word` of `command`, when it is one of `expected`; otherwise a UsageError naming
 * the word (or saying one is missing) and listing the subcommands.
 */
export function subcommand<T extends string>(
  command: string,
  word: string | undefined,
  expected: readonly T[],
): T {
  if (word !== undefined && (expected as readonly string[]).includes(word)) return word as T;
  const list =
    expected.length > 1 ? `${expected.slice(0, -1).join(', ')} or ${expected.at(-1)}` : (expected[0] ?? '');
  throw new UsageError(
    [
      {
        field: 'command',
        message:
          word === undefined
            ? `${command} needs a command: ${list}`
            : `unknown ${command} command '${word}' (expected ${list})`,
      },
    ],
    'Usage',
  );
}
