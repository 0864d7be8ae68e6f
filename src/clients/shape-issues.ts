/**
 * What an `UpstreamError`'s detail says when a vendor response fails its schema: each issue's code
 * and where it is, never zod's message. The detail reaches the audit ledger, and zod's messages can
 * carry what was received (unrecognized key names, a refinement's own text); a path can too, where
 * it runs through a map's keys (Sift's `scores`, keyed by whatever Sift sent): such a segment is
 * written `*`. Only the names the schema itself declares, and array indexes, are kept.
 */
import type * as z from 'zod';

/** How many issues a detail lists; the rest are counted. */
const MAX_ISSUES = 5;

export function describeShapeIssues(schema: z.ZodType, error: z.ZodError): string {
  const parts = error.issues.slice(0, MAX_ISSUES).map((issue) => {
    // `expected` of invalid_type is a type name the schema declares, never a received value.
    const expected = issue.code === 'invalid_type' ? ` (expected ${String(issue.expected)})` : '';
    return `${issue.code}${expected} at ${pathOf(schema, issue.path)}`;
  });
  const more = error.issues.length - MAX_ISSUES;
  return parts.join('; ') + (more > 0 ? `; +${more} more` : '');
}

/** The zod definition fields the walk reads (zod's own `$ZodTypeDef` is a union per type). */
interface Def {
  type: string;
  shape?: Record<string, z.ZodType>;
  element?: z.ZodType;
  valueType?: z.ZodType;
  innerType?: z.ZodType;
  in?: z.ZodType;
  getter?: () => z.ZodType;
}

const defOf = (schema: z.ZodType | undefined): Def | undefined =>
  (schema as { _zod?: { def?: Def } } | undefined)?._zod?.def;

/** Through the wrappers that do not change where a value sits (optional, nullable, a transform's input…). */
function unwrap(schema: z.ZodType | undefined): Def | undefined {
  let def = defOf(schema);
  for (let depth = 0; def && depth < 16; depth++) {
    const inner = def.innerType ?? def.in ?? def.getter?.();
    if (!inner) break;
    def = defOf(inner);
  }
  return def;
}

function pathOf(schema: z.ZodType, path: readonly PropertyKey[]): string {
  let current: z.ZodType | undefined = schema;
  let out = '$';
  for (const segment of path) {
    const def = unwrap(current);
    if (typeof segment === 'number') {
      out += `[${segment}]`;
      current = def?.type === 'array' ? def.element : undefined;
    } else if (
      typeof segment === 'string' &&
      def?.type === 'object' &&
      def.shape &&
      Object.hasOwn(def.shape, segment)
    ) {
      out += `.${segment}`;
      current = def.shape[segment];
    } else {
      // A key the schema does not name (a map's key, a loose object's extra): data, not a name.
      out += '.*';
      current = def?.type === 'record' ? def.valueType : undefined;
    }
  }
  return out;
}
