/**
 * `fraudgate sandbox …`: the built-in emulators as a newcomer sees them.
 *
 *   show USER_ID [--json]   what Sift, Segment and Salesforce hold for a user — read through the same
 *                           clients the tools use, from the sandbox the running server uses (or the
 *                           data dir's saved one), so a label or a trait that landed is visible here
 *   reset                   start over from the demo data, with a new development token
 */
import type { CliValues } from '../cli.ts';
import { soqlQuote } from '../clients/salesforce-client.ts';
import type { LoadedConfig } from '../config.ts';
import { NotFoundError } from '../errors.ts';
import { createClients } from '../runtime.ts';
import { resetSandbox, resolveUpstreams } from '../sandbox/sandbox.ts';
import { subcommand, UsageError } from './usage.ts';

export async function runSandboxCommand(
  args: string[],
  values: CliValues,
  loaded: LoadedConfig,
): Promise<number> {
  const sub = subcommand('sandbox', args[0], ['show', 'reset']);
  const userId = args[1];
  const out = (text: string) => process.stdout.write(text + '\n');
  if (loaded.config.mode !== 'sandbox') {
    process.stderr.write(
      'fraudgate: sandbox commands act on the built-in emulators, but this configuration is live mode (credentials are set); add --sandbox\n',
    );
    return 1;
  }
  switch (sub) {
    case 'reset':
      await resetSandbox(loaded.config.data_dir);
      out(
        `Sandbox reset (${loaded.config.data_dir}): the emulators start from the demo data again, and the next server prints a new development token.`,
      );
      return 0;
    case 'show': {
      if (!userId)
        throw new UsageError([
          { field: 'USER_ID', message: 'give the Sift user id, e.g. sandbox-high-risk' },
        ]);
      const view = await showUser(loaded, userId);
      out(values.json ? JSON.stringify(view, null, 2) : render(userId, view));
      return 0;
    }
  }
}

interface UserView {
  sift: {
    scores: Record<string, number>;
    labels: Record<string, unknown>;
    decisions: Record<string, unknown>;
  } | null;
  segment: { traits: Record<string, unknown> } | null;
  salesforce: Record<string, Record<string, unknown>[]>;
}

async function showUser(loaded: LoadedConfig, userId: string): Promise<UserView> {
  const { config, secrets, sandbox } = await resolveUpstreams(loaded.config, loaded.secrets);
  const clients = createClients(config, secrets);
  try {
    const sift = await clients.sift.getUserScore(userId).then(
      (score) => ({
        scores: Object.fromEntries(Object.entries(score.scores).map(([type, s]) => [type, s?.score ?? 0])),
        labels: score.latestLabels as Record<string, unknown>,
        decisions: score.latestDecisions as Record<string, unknown>,
      }),
      (error: unknown) => {
        if (error instanceof NotFoundError) return null;
        throw error;
      },
    );
    const traits = await clients.segment.getProfileTraits(userId);
    const id = soqlQuote(userId);
    const [accounts, contacts, cases] = await Promise.all([
      clients.salesforce.query(
        `SELECT Id, Name, Sift_Decision__c, Sift_Score__c FROM Account WHERE Sift_User_Id__c = ${id}`,
      ),
      clients.salesforce.query(
        `SELECT Id, Name, Email, Sift_Decision__c, Sift_Score__c FROM Contact WHERE Sift_User_Id__c = ${id}`,
      ),
      clients.salesforce.query(
        `SELECT Id, CaseNumber, Subject, Status, Type FROM Case WHERE Sift_User_Id__c = ${id}`,
      ),
    ]);
    const plain = (records: Record<string, unknown>[]) =>
      records.map(({ attributes: _attributes, ...fields }) => fields);
    return {
      sift,
      segment: traits ? { traits } : null,
      salesforce: { Account: plain(accounts), Contact: plain(contacts), Case: plain(cases) },
    };
  } finally {
    await Promise.allSettled([clients.sift.close(), clients.segment.close(), clients.salesforce.close()]);
    await sandbox?.close();
  }
}

function render(userId: string, view: UserView): string {
  const json = (value: unknown) => JSON.stringify(value);
  const lines = [`${userId}`, '  Sift'];
  if (!view.sift) lines.push('    no scoreable events (unknown to Sift)');
  else {
    for (const [type, score] of Object.entries(view.sift.scores)) lines.push(`    score ${type}: ${score}`);
    for (const [type, label] of Object.entries(view.sift.labels))
      lines.push(`    label ${type}: ${json(label)}`);
    for (const [type, decision] of Object.entries(view.sift.decisions))
      lines.push(`    decision ${type}: ${json(decision)}`);
  }
  lines.push('  Segment');
  if (!view.segment) lines.push('    no profile');
  else
    for (const [name, value] of Object.entries(view.segment.traits))
      lines.push(`    trait ${name}: ${json(value)}`);
  lines.push('  Salesforce');
  const records = Object.entries(view.salesforce).flatMap(([object, rows]) =>
    rows.map((row) => ({ object, row })),
  );
  if (records.length === 0) lines.push(`    no Account, Contact or Case with Sift_User_Id__c = ${userId}`);
  for (const { object, row } of records) {
    const { Id, ...fields } = row;
    lines.push(`    ${object} ${String(Id)}: ${json(fields)}`);
  }
  return lines.join('\n');
}
