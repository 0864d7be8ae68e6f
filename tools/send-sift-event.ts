import * as z from 'zod';
import type { SiftEventResult } from '../src/clients/types.ts';
import { ERROR_CODES, FraudgateError, toFraudgateError } from '../src/errors.ts';
import { defineTool, type ToolContext } from '../src/tool.ts';
import { currencyDecimals, fromMicros, toMicros, toSiftMicros } from './money.ts';
import { abuseTypes, phoneNumber, plainText, scoreSummaryFields, summarizeScore, userId } from './schemas.ts';

/** Sift's id charset (contract §10) also holds for the other ids we send: transaction, session, transfer. */
const siftIdSchema = z
  .string()
  .min(1)
  .max(255)
  .regex(/^[A-Za-z0-9=.\-_+@:&^%!$]+$/, 'may only contain a-z A-Z 0-9 = . - _ + @ : & ^ % ! $');
const siftId = (what: string) => siftIdSchema.describe(what);

/** One schema for every amount, so `tools/list` writes its rule once (src/wire-schema.ts `$defs`). */
const decimal = z
  .string()
  .regex(/^-?\d{1,20}(\.\d{1,20})?$/, 'a decimal string like "12.50" (no exponent, no thousands separator)')
  .describe('Decimal string, e.g. "12.50"; sent in micros.');

const decimalAmount = (what: string) => decimal.describe(what);

const currency = z
  .string()
  .regex(/^[A-Za-z]{3,5}$/, 'an ISO 4217 code such as USD or JPY, or a crypto ticker such as BTC')
  .refine(
    (c) => currencyDecimals(c) !== undefined,
    'unknown currency: use an ISO 4217 code or BTC, ETH, LTC, USDC, USDT…',
  )
  .describe('ISO 4217 code or crypto ticker, e.g. USD, BTC.');

/** Sift's own spelling (`$success`, as in the wallet guide) is accepted too; it is sent once-prefixed. */
const status = z.enum(['success', 'failure', 'pending', '$success', '$failure', '$pending']);

/** Product-defined status words sent as custom fields (Sift does not interpret them). */
const customStatus = (what: string) =>
  z
    .string()
    .regex(/^[a-z0-9_]{1,64}$/, 'lower-case letters, digits and _')
    .describe(what);

const customFields = z
  .record(
    z.string().regex(/^[a-z][a-z0-9_]{0,63}$/, 'custom field names are snake_case and never start with $'),
    z.union([plainText(z.string().max(1000)), z.number(), z.boolean()]),
  )
  .refine((r) => Object.keys(r).length <= 30, 'at most 30 custom fields')
  .describe('Sent as Sift custom fields.');

/** The app and device fields: one schema, so `tools/list` can write it once. */
const appText = plainText(z.string().max(100)).optional();

/** Where the event happened: session, network and device. Personal data: sent to Sift, never echoed back. */
const context = {
  session_id: siftId('Sift JS/SDK session id.').optional(),
  ip: z.union([z.ipv4(), z.ipv6()]).optional().describe('Client IP ($ip).'),
  user_agent: plainText(z.string().min(1).max(1000)).optional().describe('Browser user agent (web).'),
  app: z
    .strictObject({
      os: appText,
      os_version: appText,
      device_manufacturer: appText,
      device_model: appText,
      device_unique_id: plainText(z.string().max(255)).optional(),
      app_name: appText,
      app_version: appText,
    })
    .optional()
    .describe('Mobile app and device; or user_agent.'),
  occurred_at: z.iso.datetime({ offset: true }).optional().describe('For backfill only.'),
};

const account = {
  user_id: userId,
  email: z.email().max(254).optional().describe('$user_email.'),
  name: plainText(z.string().min(1).max(200)).optional(),
  phone: phoneNumber.optional(),
  verification_phone_number: z
    .string()
    .regex(/^\+[1-9]\d{6,14}$/, 'E.164, e.g. +14155550123')
    .optional()
    .describe('E.164, for one-time codes.'),
  referrer_user_id: userId.optional().describe('Who referred this user.'),
  account_types: z
    .array(plainText(z.string().min(1).max(64)))
    .max(10)
    .optional()
    .describe('e.g. ["wallet", "premium"].'),
  social_sign_on_type: z
    .enum(['facebook', 'google', 'linkedin', 'twitter', 'yahoo', 'microsoft', 'amazon', 'apple', 'other'])
    .optional(),
  account_state: customStatus('e.g. standard, frozen.').optional(),
  sms_verification_status: customStatus('e.g. pending, verified.').optional(),
  credit_verification_status: customStatus('e.g. pending, passed.').optional(),
  custom_fields: customFields.optional(),
  ...context,
};

type MoneyField = 'amount' | 'current_balance' | 'new_balance';

/** Amount checks that need the currency: precision and size (zod issues land on the amount field). */
function checkMoney(fields: readonly MoneyField[]) {
  return (value: Partial<Record<MoneyField, string>> & { currency: string }, ctx: z.RefinementCtx) => {
    if (currencyDecimals(value.currency) === undefined) return;
    for (const field of fields) {
      const raw = value[field];
      if (raw === undefined) continue;
      const micros = toSiftMicros(raw, value.currency);
      if (!micros.ok) ctx.addIssue({ code: 'custom', path: [field], message: micros.reason });
      else if (field === 'amount' && micros.value <= 0) {
        ctx.addIssue({
          code: 'custom',
          path: [field],
          message: 'must be greater than 0 (the direction is in transaction_type)',
        });
      }
    }
  };
}

function checkDevice(value: { user_agent?: string | undefined; app?: unknown }, ctx: z.RefinementCtx) {
  if (value.user_agent !== undefined && value.app !== undefined) {
    ctx.addIssue({
      code: 'custom',
      path: ['app'],
      message: 'give user_agent (web) or app (mobile), not both',
    });
  }
}

const createAccount = z
  .strictObject({ event_type: z.literal('create_account'), ...account })
  .superRefine(checkDevice)
  .describe('$create_account.');

const updateAccount = z
  .strictObject({
    event_type: z.literal('update_account'),
    ...account,
    changed_password: z.boolean().optional().describe('A password change.'),
  })
  .superRefine(checkDevice)
  .describe('$update_account.');

const login = z
  .strictObject({
    event_type: z.literal('login'),
    user_id: userId,
    login_status: z.enum(['success', 'failure', '$success', '$failure']),
    failure_reason: z
      .enum(['account_unknown', 'account_suspended', 'account_disabled', 'wrong_password'])
      .optional()
      .describe('Failures only.'),
    username: plainText(z.string().min(1).max(255)).optional(),
    ...context,
  })
  .superRefine((value, ctx) => {
    checkDevice(value, ctx);
    if (value.failure_reason !== undefined && reserved(value.login_status) !== '$failure') {
      ctx.addIssue({
        code: 'custom',
        path: ['failure_reason'],
        message: 'only allowed when login_status is failure',
      });
    }
  })
  .describe('$login.');

const logout = z
  .strictObject({ event_type: z.literal('logout'), user_id: userId, ...context })
  .superRefine(checkDevice)
  .describe('$logout.');

const DECLINE_CATEGORIES = [
  'fraud',
  'lost_or_stolen',
  'risky',
  'bank_decline',
  'invalid',
  'expired',
  'insufficient_funds',
  'limit_exceeded',
  'additional_verification_required',
  'invalid_verification',
  'other',
] as const;

const PAYMENT_TYPES = [
  'digital_wallet',
  'crypto_currency',
  'credit_card',
  'debit_card',
  'prepaid_card',
  'ach_credit',
  'ach_debit',
  'wire_credit',
  'wire_debit',
  'sepa_credit',
  'sepa_instant_credit',
  'sepa_direct_debit',
  'electronic_fund_transfer',
  'cash',
  'store_credit',
] as const;

const CARD_TYPES: readonly string[] = ['credit_card', 'debit_card', 'prepaid_card'];
// prettier-ignore
const BANK_TYPES: readonly string[] = [
  'ach_credit', 'ach_debit', 'wire_credit', 'wire_debit', 'sepa_credit', 'sepa_instant_credit',
  'sepa_direct_debit', 'electronic_fund_transfer',
];
const CARD_FIELDS = ['card_bin', 'card_last4', 'avs_result_code', 'cvv_result_code'] as const;
// prettier-ignore
const BANK_FIELDS = [
  'routing_number', 'account_number_last5', 'account_holder_name', 'bank_name', 'bank_country',
  'shortened_iban_first6', 'shortened_iban_last4', 'sepa_direct_debit_mandate',
] as const;

const digits = (n: string, what: string) => z.string().regex(new RegExp(`^\\d{${n}}$`), what);
const text = plainText(z.string().min(1).max(200));

/**
 * Sift's PaymentMethod (contract §2.2) with the card and bank fields its schema defines, named
 * without Sift's `$`. Only partial numbers exist as fields: never a full card or account number.
 */
const paymentMethod = z
  .strictObject({
    type: z.enum(PAYMENT_TYPES),
    gateway: z
      .string()
      .regex(/^[a-z0-9_]{1,64}$/, 'lower-case letters, digits and _, e.g. stripe')
      .optional(),
    card_bin: digits('6,8', 'the first 6–8 digits of the card').optional(),
    card_last4: digits('4', 'the last 4 digits of the card').optional(),
    avs_result_code: z
      .string()
      .regex(/^[A-Z0-9]{1,2}$/, 'a one- or two-character AVS code')
      .optional(),
    cvv_result_code: z
      .string()
      .regex(/^[A-Z0-9]{1,2}$/, 'a one- or two-character CVV code')
      .optional(),
    verification_status: status.optional(),
    decline_reason_code: plainText(z.string().min(1).max(64)).optional(),
    routing_number: z
      .string()
      .regex(/^[0-9A-Z]{4,20}$/, 'digits and capital letters')
      .optional(),
    account_number_last5: digits('5', 'the last 5 digits of the account number').optional(),
    account_holder_name: text.optional(),
    bank_name: text.optional(),
    bank_country: z
      .string()
      .regex(/^[A-Z]{2}$/, 'ISO 3166 alpha-2, e.g. DE')
      .optional(),
    shortened_iban_first6: z
      .string()
      .regex(/^[A-Z]{2}[0-9A-Z]{4}$/, 'the first 6 IBAN characters')
      .optional(),
    shortened_iban_last4: z
      .string()
      .regex(/^[0-9A-Z]{4}$/, 'the last 4 IBAN characters')
      .optional(),
    sepa_direct_debit_mandate: z.boolean().optional(),
    wallet_address: text.optional(),
  })
  .superRefine((value, ctx) => {
    const refuse = (fields: readonly string[], kinds: readonly string[], what: string) => {
      if (kinds.includes(value.type)) return;
      for (const field of fields) {
        if (value[field as keyof typeof value] === undefined) continue;
        ctx.addIssue({ code: 'custom', path: [field], message: `only for ${what} payment types` });
      }
    };
    refuse(CARD_FIELDS, CARD_TYPES, 'card');
    refuse(BANK_FIELDS, BANK_TYPES, 'bank');
  })
  .describe('Card fields for card types, bank fields for bank types.');

type PaymentMethodInput = z.infer<typeof paymentMethod>;

/**
 * A wallet's balance after the event, as Sift's wallet guide names it: `account_balance_amount`
 * in `account_balance_currency_code`, and for a wallet holding both, `btc_balance_amount` (BTC)
 * and `cash_balance_amount`; all sent in micros.
 */
const walletBalance = z
  .strictObject({
    currency,
    amount: decimalAmount('account_balance_amount').optional(),
    btc: decimalAmount('btc_balance_amount, in BTC').optional(),
    cash: decimalAmount('cash_balance_amount').optional(),
  })
  .superRefine((value, ctx) => {
    if (value.amount === undefined && value.btc === undefined && value.cash === undefined) {
      ctx.addIssue({ code: 'custom', path: ['amount'], message: 'give amount, btc or cash' });
    }
    if (currencyDecimals(value.currency) === undefined) return;
    for (const [field, code] of [
      ['amount', value.currency],
      ['btc', 'BTC'],
      ['cash', value.currency],
    ] as const) {
      const raw = value[field];
      if (raw === undefined) continue;
      const micros = toSiftMicros(raw, code);
      if (!micros.ok) ctx.addIssue({ code: 'custom', path: [field], message: micros.reason });
    }
  })
  .describe('The wallet after this event.');

type WalletBalanceInput = z.infer<typeof walletBalance>;

const transaction = z
  .strictObject({
    event_type: z.literal('transaction'),
    user_id: userId,
    transaction_type: z.enum(['deposit', 'withdrawal', 'transfer']),
    transaction_status: status.describe('Later outcome: resend.'),
    transaction_id: siftId('Reuse for status updates.'),
    amount: decimalAmount('Positive.'),
    currency,
    current_balance: decimalAmount('$current_balance').optional(),
    new_balance: decimalAmount('$new_balance').optional(),
    decline_category: z.enum(DECLINE_CATEGORIES).optional().describe('Failures only.'),
    transfer_recipient_user_id: userId.optional().describe('transaction_type transfer only.'),
    payment_method: paymentMethod.optional(),
    balance: walletBalance.optional(),
    custom_fields: customFields.optional(),
    ...context,
  })
  .superRefine((value, ctx) => {
    checkDevice(value, ctx);
    checkMoney(['amount', 'current_balance', 'new_balance'])(value, ctx);
    if (value.decline_category !== undefined && reserved(value.transaction_status) !== '$failure') {
      ctx.addIssue({
        code: 'custom',
        path: ['decline_category'],
        message: 'only allowed when transaction_status is failure',
      });
    }
    if (value.transfer_recipient_user_id !== undefined && value.transaction_type !== 'transfer') {
      ctx.addIssue({
        code: 'custom',
        path: ['transfer_recipient_user_id'],
        message: 'only allowed when transaction_type is transfer',
      });
    }
  })
  .describe('$transaction.');

const walletTransfer = z
  .strictObject({
    event_type: z.literal('wallet_transfer'),
    sender_user_id: userId.describe('The wallet the money leaves.'),
    recipient_user_id: userId.describe('The wallet the money reaches.'),
    transfer_id: siftId('Both events carry it.'),
    amount: decimalAmount('Positive.'),
    currency,
    transfer_status: status,
    sender_balance: walletBalance.optional(),
    recipient_balance: walletBalance.optional(),
    ...context,
  })
  .superRefine((value, ctx) => {
    checkDevice(value, ctx);
    checkMoney(['amount'])(value, ctx);
    if (value.sender_user_id === value.recipient_user_id) {
      ctx.addIssue({
        code: 'custom',
        path: ['recipient_user_id'],
        message: 'must differ from sender_user_id',
      });
    }
  })
  .describe('Sent as send_money and receive_money.');

const eventInput = z.discriminatedUnion('event_type', [
  createAccount,
  updateAccount,
  login,
  logout,
  transaction,
  walletTransfer,
]);

type EventInput = z.infer<typeof eventInput>;
type ContextInput = { [K in keyof typeof context]?: z.infer<(typeof context)[K]> };

const sentEvent = z.object({
  sift_type: z.string().describe('$type sent, e.g. send_money.'),
  user_id: z.string(),
  transaction_id: z.string().optional(),
  transaction_status: z.string().optional(),
  amount: z.string().optional().describe('Canonical decimal amount.'),
  amount_micros: z.number().int().optional().describe('As Sift received it.'),
  currency_code: z.string().optional(),
});

type SentEvent = z.infer<typeof sentEvent>;

/** Maps `success` → `$success` and so on: Sift's reserved enum values carry a `$`. */
const reserved = (value: string) => (value.startsWith('$') ? value : `$${value}`);
/** A status as fraudgate reports it (and as custom events carry it): without Sift's `$`. */
const plain = (value: string) => value.replace(/^\$/, '');

/** Throws only for amounts the schema already checked, so a failure here is a bug. */
function micros(amount: string, code: string): number {
  const result = toSiftMicros(amount, code);
  if (!result.ok) throw new Error(`money check skipped: ${result.reason}`);
  return result.value;
}

function canonical(amount: string, code: string): string {
  const m = toMicros(amount, code);
  const text = m.ok ? fromMicros(m.value, code) : undefined;
  return text?.ok ? text.value : amount;
}

function contextFields(e: ContextInput): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (e.session_id !== undefined) out.$session_id = e.session_id;
  if (e.ip !== undefined) out.$ip = e.ip;
  if (e.user_agent !== undefined) out.$browser = { $user_agent: e.user_agent };
  if (e.app !== undefined) {
    out.$app = Object.fromEntries(
      Object.entries(e.app)
        .filter(([, v]) => v !== undefined)
        .map(([k, v]) => [`$${k}`, v]),
    );
  }
  if (e.occurred_at !== undefined) out.$time = Date.parse(e.occurred_at);
  return out;
}

/** Copy the defined entries, renaming keys; undefined values are left out of the Sift body. */
function pick(source: Record<string, unknown>, names: Record<string, string>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [from, to] of Object.entries(names)) if (source[from] !== undefined) out[to] = source[from];
  return out;
}

/** Sift's `$payment_method`: every given field `$`-prefixed, enum values too. */
function siftPaymentMethod(method: PaymentMethodInput): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [field, value] of Object.entries(method)) {
    if (value === undefined) continue;
    const key = field === 'type' ? '$payment_type' : field === 'gateway' ? '$payment_gateway' : `$${field}`;
    const enumerated = field === 'type' || field === 'gateway' || field === 'verification_status';
    out[key] = enumerated && typeof value === 'string' ? reserved(value) : value;
  }
  return out;
}

/** The wallet guide's balance fields, in micros (custom fields: no `$`). */
function balanceFields(balance: WalletBalanceInput): Record<string, unknown> {
  const code = balance.currency.toUpperCase();
  return {
    account_balance_currency_code: code,
    ...(balance.amount === undefined ? {} : { account_balance_amount: micros(balance.amount, code) }),
    ...(balance.btc === undefined ? {} : { btc_balance_amount: micros(balance.btc, 'BTC') }),
    ...(balance.cash === undefined ? {} : { cash_balance_amount: micros(balance.cash, code) }),
  };
}

/** The Sift event bodies for one input (two for a wallet transfer), without `$api_key` (the client adds it). */
export function toSiftEvents(e: EventInput): { body: Record<string, unknown>; sent: SentEvent }[] {
  switch (e.event_type) {
    case 'create_account':
    case 'update_account': {
      const body: Record<string, unknown> = {
        $type: reserved(e.event_type),
        $user_id: e.user_id,
        ...pick(e, {
          email: '$user_email',
          name: '$name',
          phone: '$phone',
          verification_phone_number: '$verification_phone_number',
          referrer_user_id: '$referrer_user_id',
          account_types: '$account_types',
          changed_password: '$changed_password',
        }),
        ...(e.social_sign_on_type ? { $social_sign_on_type: reserved(e.social_sign_on_type) } : {}),
        ...contextFields(e),
        ...e.custom_fields,
        ...pick(e, {
          account_state: 'account_state',
          sms_verification_status: 'sms_verification_status',
          credit_verification_status: 'credit_verification_status',
        }),
      };
      return [{ body, sent: { sift_type: reserved(e.event_type), user_id: e.user_id } }];
    }
    case 'login': {
      const body = {
        $type: '$login',
        $user_id: e.user_id,
        $login_status: reserved(e.login_status),
        ...(e.failure_reason ? { $failure_reason: reserved(e.failure_reason) } : {}),
        ...pick(e, { username: '$username' }),
        ...contextFields(e),
      };
      return [{ body, sent: { sift_type: '$login', user_id: e.user_id } }];
    }
    case 'logout':
      return [
        {
          body: { $type: '$logout', $user_id: e.user_id, ...contextFields(e) },
          sent: { sift_type: '$logout', user_id: e.user_id },
        },
      ];
    case 'transaction': {
      const code = e.currency.toUpperCase();
      const amountMicros = micros(e.amount, code);
      const body: Record<string, unknown> = {
        $type: '$transaction',
        $user_id: e.user_id,
        $transaction_type: reserved(e.transaction_type),
        $transaction_status: reserved(e.transaction_status),
        $transaction_id: e.transaction_id,
        $amount: amountMicros,
        $currency_code: code,
        ...(e.current_balance === undefined ? {} : { $current_balance: micros(e.current_balance, code) }),
        ...(e.new_balance === undefined ? {} : { $new_balance: micros(e.new_balance, code) }),
        ...(e.decline_category ? { $decline_category: reserved(e.decline_category) } : {}),
        ...pick(e, { transfer_recipient_user_id: '$transfer_recipient_user_id' }),
        ...(e.payment_method ? { $payment_method: siftPaymentMethod(e.payment_method) } : {}),
        ...contextFields(e),
        ...e.custom_fields,
        ...(e.balance ? balanceFields(e.balance) : {}),
      };
      return [
        {
          body,
          sent: {
            sift_type: '$transaction',
            user_id: e.user_id,
            transaction_id: e.transaction_id,
            transaction_status: plain(e.transaction_status),
            amount: canonical(e.amount, code),
            amount_micros: amountMicros,
            currency_code: code,
          },
        },
      ];
    }
    case 'wallet_transfer': {
      const code = e.currency.toUpperCase();
      const amountMicros = micros(e.amount, code);
      // Custom events named as in Sift's wallet guide: send_amount / receive_amount in micros, the
      // other party, and each wallet's balance after the transfer (account_balance_amount …).
      const shared = {
        transfer_id: e.transfer_id,
        currency_code: code,
        transfer_status: plain(e.transfer_status),
      };
      const sent = (type: string, user: string): SentEvent => ({
        sift_type: type,
        user_id: user,
        transaction_id: e.transfer_id,
        transaction_status: plain(e.transfer_status),
        amount: canonical(e.amount, code),
        amount_micros: amountMicros,
        currency_code: code,
      });
      return [
        {
          // The sender's session and device: they are the one acting.
          body: {
            $type: 'send_money',
            $user_id: e.sender_user_id,
            send_amount: amountMicros,
            recipient_user_id: e.recipient_user_id,
            ...shared,
            ...(e.sender_balance ? balanceFields(e.sender_balance) : {}),
            ...contextFields(e),
          },
          sent: sent('send_money', e.sender_user_id),
        },
        {
          body: {
            $type: 'receive_money',
            $user_id: e.recipient_user_id,
            receive_amount: amountMicros,
            sender_user_id: e.sender_user_id,
            ...shared,
            ...(e.recipient_balance ? balanceFields(e.recipient_balance) : {}),
            ...(e.occurred_at === undefined ? {} : { $time: Date.parse(e.occurred_at) }),
          },
          sent: sent('receive_money', e.recipient_user_id),
        },
      ];
    }
  }
}

const actingUser = (e: EventInput) => (e.event_type === 'wallet_transfer' ? e.sender_user_id : e.user_id);

function scoreOf(result: SiftEventResult, ctx: ToolContext) {
  if (result.score) return { score: summarizeScore(result.score, ctx.config.risk_bands), score_error: null };
  return {
    score: null,
    score_error: {
      sift_status: result.scoreStatus ?? -1,
      message: `The event was recorded but Sift could not score it (${result.scoreErrorMessage ?? 'no score returned'}); call get_sift_score later.`,
    },
  };
}

export const sendSiftEvent = defineTool({
  name: 'send_sift_event',
  title: 'Send a wallet event to Sift',
  description:
    'Report a wallet event to Sift so it scores the user: create_account, update_account, login, ' +
    'logout, transaction (deposit, withdrawal or transfer, with payment_method and balance; resend ' +
    'the same transaction_id with a new status), or wallet_transfer (send_money and receive_money ' +
    "with send_amount, receive_amount and each balance, as Sift's wallet guide names them). Amounts " +
    'are converted exactly to micros; more decimals than the currency has are refused. Not ' +
    'idempotent: a repeat records the event twice.',
  risk: 'write',
  toolset: 'sift',
  idempotent: false,
  input: z.strictObject({
    event: eventInput.describe('event_type selects the fields.'),
    return_score: z.boolean().default(false).describe("Also return the acting user's score."),
    return_workflow_status: z
      .boolean()
      .default(false)
      .describe('Also run Sift workflows and return their results.'),
    abuse_types: abuseTypes.optional().describe('With return_score.'),
  }),
  output: z.object({
    event_type: z.string(),
    user_id: z.string().describe('The acting user.'),
    events_sent: z.array(sentEvent),
    score: z.object(scoreSummaryFields).nullable().describe('With return_score.'),
    workflow_statuses: z
      .array(
        z.object({
          run_id: z.string(),
          state: z.string(),
          workflow: z.string().optional(),
          abuse_types: z.array(z.string()),
          decision_ids: z.array(z.string()).describe('Decisions the run applies.'),
          route: z.string().optional(),
        }),
      )
      .optional()
      .describe('With return_workflow_status.'),
    score_error: z
      .object({ sift_status: z.number(), message: z.string() })
      .nullable()
      .describe('Why no score came back.'),
  }),
  target: (args) => `sift_user:${actingUser(args.event)}`,
  // Custom-field names are the model's choice (national_id, spouse), so no key name tells which
  // are personal: the audit keeps the names and hashes every value, and the device id.
  redaction: { args: { personal: ['event.custom_fields', 'event.app.device_unique_id'] } },
  // Sift events are append-only: there is no current state to read, only what would be sent.
  plan: async (args) => ({ current: {}, changes: { events: toSiftEvents(args.event).map((e) => e.sent) } }),
  async run(args, ctx) {
    const events = toSiftEvents(args.event);
    const sent: SentEvent[] = [];
    let first: SiftEventResult | undefined;
    for (const [index, { body, sent: summary }] of events.entries()) {
      try {
        const result = await ctx.clients.sift.sendEvent(body, {
          signal: ctx.signal,
          // Only the first (acting user's) event asks for a score.
          ...(index === 0 && (args.return_score || args.return_workflow_status)
            ? {
                returnScore: args.return_score,
                returnWorkflowStatus: args.return_workflow_status,
                abuseTypes: args.abuse_types,
              }
            : {}),
        });
        first ??= result;
        sent.push(summary);
      } catch (thrown) {
        if (sent.length === 0) throw thrown;
        const error = toFraudgateError(thrown);
        // Resending the whole call would duplicate what already reached Sift.
        throw new FraudgateError(
          ERROR_CODES.UPSTREAM_ERROR,
          `${sent.map((s) => s.sift_type).join(', ')} reached Sift but ${summary.sift_type} failed (${error.message}). ` +
            'Do not repeat this call: it would record the first event twice. Ask an operator to resend the missing event.',
          {
            retryable: false,
            detail: error.detail,
            data: { sent: sent.map((s) => s.sift_type), failed: summary.sift_type },
          },
        );
      }
    }
    const scoring = args.return_score || args.return_workflow_status;
    const scored = scoring && first ? scoreOf(first, ctx) : { score: null, score_error: null };
    const workflows = args.return_workflow_status ? (first?.workflowStatuses ?? []) : undefined;
    return {
      event_type: args.event.event_type,
      user_id: actingUser(args.event),
      events_sent: sent,
      ...scored,
      ...(workflows
        ? {
            workflow_statuses: workflows.map((w) => ({
              run_id: w.runId,
              state: w.state,
              ...(w.workflow ? { workflow: w.workflow } : {}),
              abuse_types: w.abuseTypes,
              decision_ids: w.decisionIds,
              ...(w.route ? { route: w.route } : {}),
            })),
          }
        : {}),
    };
  },
});
