/**
 * Exact conversion between decimal money strings and Sift micros. Pure: no I/O, no floating point.
 *
 * Sift's contract (shared/contracts/sift.md §2.3): `$amount` and every other amount or balance field
 * is an integer number of micros of the currency's *base* unit: 1 USD = 1,000,000 micros, so
 * 1 cent = 10,000 micros; 1 JPY = 1,000,000 micros; 1 BTC = 1,000,000 micros. Consequences:
 * - a currency's minor unit bounds the decimals an amount may carry (JPY 0, USD 2, KWD 3, BTC 8);
 * - micros carry at most 6 decimals of the base unit, so for BTC (8) and ETH (18) anything finer
 *   than 0.000001 cannot be sent to Sift exactly and is rejected rather than rounded;
 * - Sift reads JSON numbers, so micros above Number.MAX_SAFE_INTEGER (about 9×10^9 USD) are rejected.
 */

/** Decimal places Sift's micros can hold: 1 micro = 10^-6 of the base unit. */
export const MICROS_DECIMALS = 6;
const MICROS_PER_UNIT = 10n ** BigInt(MICROS_DECIMALS);

/** ISO 4217 minor units that differ from 2, and the crypto currencies wallets commonly carry. */
// prettier-ignore
const MINOR_UNITS: Readonly<Record<string, number>> = {
  // Zero-decimal ISO 4217 currencies.
  BIF: 0, CLP: 0, DJF: 0, GNF: 0, ISK: 0, JPY: 0, KMF: 0, KRW: 0, PYG: 0, RWF: 0, UGX: 0, UYI: 0,
  VND: 0, VUV: 0, XAF: 0, XOF: 0, XPF: 0,
  // Three- and four-decimal ISO 4217 currencies.
  BHD: 3, IQD: 3, JOD: 3, KWD: 3, LYD: 3, OMR: 3, TND: 3, CLF: 4, UYW: 4,
  // Crypto (not ISO 4217; Sift accepts their tickers as $currency_code).
  BTC: 8, BCH: 8, LTC: 8, DOGE: 8, ETH: 18, USDC: 6, USDT: 6, SOL: 9, XRP: 6,
};

/** Three letters (ISO 4217) or a crypto ticker from the table above. */
export const CURRENCY_PATTERN = /^[A-Z]{3,5}$/;

/** Why a money string was refused; the text is written for the model and names the rule. */
export type MoneyResult<T> = { ok: true; value: T } | { ok: false; reason: string };

/**
 * Decimal places the currency itself allows (its minor unit): ISO 4217 exponent, 2 when the
 * currency is a three-letter code not listed as different, undefined for an unknown 4–5 letter code.
 */
export function currencyDecimals(currency: string): number | undefined {
  const code = currency.toUpperCase();
  const listed = MINOR_UNITS[code];
  if (listed !== undefined) return listed;
  return /^[A-Z]{3}$/.test(code) ? 2 : undefined;
}

/** Decimal places an amount in this currency may carry when sent to Sift: min(minor unit, 6). */
export function maxFractionDigits(currency: string): number | undefined {
  const decimals = currencyDecimals(currency);
  return decimals === undefined ? undefined : Math.min(decimals, MICROS_DECIMALS);
}

const DECIMAL = /^(-)?(\d+)(?:\.(\d+))?$/;

/**
 * `"12.34"` USD → `12340000n`. Accepts an optional leading minus, digits, and an optional fraction;
 * refuses exponents, separators, blanks, and more decimals than `maxFractionDigits(currency)`.
 */
export function toMicros(amount: string, currency: string): MoneyResult<bigint> {
  const decimals = currencyDecimals(currency);
  if (decimals === undefined) return { ok: false, reason: `unknown currency "${currency}"` };
  const match = DECIMAL.exec(amount);
  if (!match) {
    return {
      ok: false,
      reason: `"${amount.slice(0, 40)}" is not a decimal number like "12.50" (digits, one optional ".")`,
    };
  }
  const [, minus, whole = '0', fraction = ''] = match;
  const code = currency.toUpperCase();
  if (fraction.length > decimals) {
    return {
      ok: false,
      reason: `${code} allows at most ${decimals} decimal place${decimals === 1 ? '' : 's'}, got ${fraction.length}`,
    };
  }
  if (fraction.length > MICROS_DECIMALS) {
    return {
      ok: false,
      reason:
        `Sift records amounts in micros (6 decimal places of one ${code}); ` +
        `${fraction.length} decimal places cannot be sent exactly`,
    };
  }
  const micros = BigInt(whole) * MICROS_PER_UNIT + BigInt(fraction.padEnd(MICROS_DECIMALS, '0'));
  return { ok: true, value: minus && micros !== 0n ? -micros : micros };
}

/**
 * `12340000n` USD → `"12.34"`: the canonical decimal string with exactly `maxFractionDigits`
 * decimals (none for JPY). Refuses micros finer than the currency allows, so the inverse is exact.
 */
export function fromMicros(micros: bigint, currency: string): MoneyResult<string> {
  const digits = maxFractionDigits(currency);
  if (digits === undefined) return { ok: false, reason: `unknown currency "${currency}"` };
  const step = 10n ** BigInt(MICROS_DECIMALS - digits);
  if (micros % step !== 0n) {
    return { ok: false, reason: `${micros} micros is finer than ${currency.toUpperCase()} allows` };
  }
  const negative = micros < 0n;
  const abs = negative ? -micros : micros;
  const whole = abs / MICROS_PER_UNIT;
  const fraction = (abs % MICROS_PER_UNIT).toString().padStart(MICROS_DECIMALS, '0').slice(0, digits);
  return { ok: true, value: `${negative ? '-' : ''}${whole}${digits > 0 ? `.${fraction}` : ''}` };
}

/**
 * `toMicros`, then the JSON number Sift expects; refuses values a JSON number cannot carry exactly.
 */
export function toSiftMicros(amount: string, currency: string): MoneyResult<number> {
  const micros = toMicros(amount, currency);
  if (!micros.ok) return micros;
  const max = BigInt(Number.MAX_SAFE_INTEGER);
  if (micros.value > max || micros.value < -max) {
    return {
      ok: false,
      reason: `too large: Sift's micros carry at most ${max / MICROS_PER_UNIT} whole units`,
    };
  }
  return { ok: true, value: Number(micros.value) };
}
