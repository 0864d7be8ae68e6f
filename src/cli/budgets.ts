/**
 * `fraudgate budgets …`: the blast-radius budgets a human must lift. `list` shows the active
 * pauses; `lift PRINCIPAL KEY` lifts one (the budget counts afresh from then; approved actions that
 * waited run on the server's next sweep). Lifting needs an approver's credential, other than the
 * paused principal's (four eyes), and is audited.
 */
import type { CliValues } from '../cli.ts';
import type { LoadedConfig } from '../config.ts';
import { createBudgets } from '../governance/budgets.ts';
import { createLogger } from '../logger.ts';
import { openBudgetStore, openGovernanceState } from '../runtime.ts';
import { authenticateOperator } from './credential.ts';
import { subcommand, UsageError } from './usage.ts';

export async function runBudgetsCommand(
  args: string[],
  values: CliValues,
  loaded: LoadedConfig,
): Promise<number> {
  const sub = subcommand('budgets', args[0], ['list', 'lift']);
  const [, principal, key] = args;
  if (sub === 'lift') {
    // Before anything opens: a usage error needs no store.
    const issues = [];
    if (!principal) issues.push({ field: 'PRINCIPAL', message: 'whose budget (see fraudgate budgets list)' });
    if (!key) issues.push({ field: 'KEY', message: 'which budget key, e.g. apply_decision:block' });
    if (issues.length > 0) throw new UsageError(issues, 'Usage: fraudgate budgets lift PRINCIPAL KEY');
  }
  const out = (text: string) => process.stdout.write(text + '\n');
  const logger = createLogger({ level: 'warn' });
  const state = await openGovernanceState(loaded.config, loaded.secrets, logger);
  const budgets = createBudgets({
    store: await openBudgetStore(loaded.config, loaded.secrets, logger),
    config: loaded.config,
    audit: state.audit,
    logger,
  });
  try {
    switch (sub) {
      case 'list': {
        const pauses = await budgets.activePauses();
        if (values.json) out(JSON.stringify(pauses, null, 2));
        else if (pauses.length === 0) out('No paused budgets.');
        else
          out(
            pauses
              .map((p) => `${p.principal}  ${p.budget_key}  paused ${p.paused_at}: ${p.reason}`)
              .join('\n'),
          );
        return 0;
      }
      case 'lift': {
        const actor = await authenticateOperator(loaded, 'lift budget pauses');
        const lifted = await budgets.lift(principal!, key!, actor);
        if (!lifted) {
          process.stderr.write(
            `fraudgate: no active pause of ${key} for ${principal} (see fraudgate budgets list)\n`,
          );
          return 1;
        }
        out(`Lifted the ${key} pause of ${principal} as ${actor.id}; the budget counts afresh from now.`);
        return 0;
      }
    }
  } finally {
    await budgets.close();
    await state.close();
  }
}
