/**
 * Whether a process that recorded its identity is provably gone. A pid alone proves nothing: the
 * same number may be a live process paused (SIGSTOP, Ctrl-Z, a debugger), a process of another
 * machine or container that shares the hostname, or a new process that reused the pid. So a process
 * records where its pid means something (the machine's boot id and its pid namespace) and which
 * process it is there (its start time, in clock ticks since boot, from /proc/<pid>/stat). Another
 * process then judges it gone only when it shares that boot and namespace AND the pid is free
 * (`kill(pid, 0)` fails with ESRCH), a zombie, or held by a process started at another time. Without
 * /proc (macOS, say) there is no identity, and nothing is ever judged gone.
 */
import { readFileSync, readlinkSync } from 'node:fs';

export interface ProcessIdentity {
  /** /proc/sys/kernel/random/boot_id: one per boot of one machine. */
  boot: string;
  /** /proc/self/ns/pid, e.g. `pid:[4026531836]`: the namespace the pid is a number in. */
  pidNamespace: string;
  pid: number;
  /** Field 22 of /proc/<pid>/stat, which a reused pid does not share. */
  startTicks: string;
}

/** The state (field 3) and start time (field 22) of /proc/<pid>/stat; undefined if unreadable. */
function statOf(pid: number): { state: string; startTicks: string } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may contain spaces and parentheses.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const [state, startTicks] = [fields[0], fields[19]];
    return state && startTicks && /^\d+$/.test(startTicks) ? { state, startTicks } : undefined;
  } catch {
    return undefined;
  }
}

/** The identity of process `pid` as this process sees it, or undefined where /proc cannot tell it. */
export function processIdentityOf(pid: number): ProcessIdentity | undefined {
  try {
    const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    const pidNamespace = readlinkSync('/proc/self/ns/pid');
    const stat = statOf(pid);
    return boot && pidNamespace && stat
      ? { boot, pidNamespace, pid, startTicks: stat.startTicks }
      : undefined;
  } catch {
    return undefined;
  }
}

let own: { identity: ProcessIdentity | undefined } | undefined;

/** This process's identity (read once), or undefined where /proc cannot tell it. */
export function ownProcessIdentity(): ProcessIdentity | undefined {
  own ??= { identity: processIdentityOf(process.pid) };
  return own.identity;
}

const SEPARATOR = '|';

/** One line of text (no spaces), to be stored; `parseProcessIdentity` reads it back. */
export function formatProcessIdentity(identity: ProcessIdentity): string {
  return ['proc', identity.boot, identity.pidNamespace, identity.pid, identity.startTicks].join(SEPARATOR);
}

export function parseProcessIdentity(text: string): ProcessIdentity | undefined {
  const [tag, boot, pidNamespace, pid, startTicks, ...rest] = text.split(SEPARATOR);
  if (tag !== 'proc' || rest.length > 0 || !boot || !pidNamespace || !pid || !startTicks) return undefined;
  if (!/^[1-9]\d*$/.test(pid) || !/^\d+$/.test(startTicks)) return undefined;
  return { boot, pidNamespace, pid: Number(pid), startTicks };
}

/**
 * True only when the process `recorded` names has provably ended: this process can see its pid
 * (same boot, same pid namespace) and that pid is free, a zombie, or another process's. A live
 * process, even stopped, is never gone; so is one this process cannot judge.
 */
export function isProcessGone(recorded: ProcessIdentity, here = ownProcessIdentity()): boolean {
  if (!here || recorded.boot !== here.boot || recorded.pidNamespace !== here.pidNamespace) return false;
  if (recorded.pid === here.pid) return recorded.startTicks !== here.startTicks;
  try {
    process.kill(recorded.pid, 0);
  } catch (error) {
    // EPERM: a process of another user holds the pid; its start time tells whether it is the same one.
    if ((error as NodeJS.ErrnoException).code === 'ESRCH') return true;
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const stat = statOf(recorded.pid);
  // Unreadable: it may have just exited, but that is not proven here; the caller's sweep will tell.
  if (!stat) return false;
  return stat.state === 'Z' || stat.state === 'X' || stat.startTicks !== recorded.startTicks;
}
