/**
 * The oslo.policy rule language: parsing a check string into a tree of checks, and
 * evaluating that tree against a target (the object acted on) and credentials (the caller).
 *
 * Syntax and semantics follow oslo.policy 4.0 (`_parser.py`, `_checks.py`), the library
 * Glance 25 enforces its rules with:
 * - `@` always passes, `!` never passes, the empty string always passes;
 * - `role:NAME` passes when the caller has the role (case-insensitive);
 * - `rule:NAME` evaluates another rule of the same policy;
 * - any other `KIND:MATCH` is a generic check: MATCH, after `%(key)s` substitution from the
 *   target, is compared with either KIND itself when KIND is a literal (`'public'`, `True`,
 *   `42`) or the credential found at the dotted path KIND (`project_id`, `user.domain_id`;
 *   a list passes when any element matches). Values compare as Python's `str()` spells
 *   them (`True`, `None`). A target key the target lacks fails the check;
 * - `not`, `and`, `or` (in that order of precedence, case-insensitive) and parentheses;
 * - the old list-of-lists JSON form: `[["role:a", "role:b"], ["role:c"]]` is (a and b) or c.
 *
 * Where oslo.policy logs a rule it cannot understand and turns it into `!`, this parser
 * throws PolicySyntaxError: an operator's typo should stop the service, not silently deny.
 */

export class PolicySyntaxError extends Error {
  constructor(message: string) { super(message); this.name = 'PolicySyntaxError'; }
}

export type Check =
  | { kind: 'true' }
  | { kind: 'false' }
  | { kind: 'rule'; name: string }
  | { kind: 'role'; match: Template }
  | { kind: 'generic'; kindText: string; path: string[] | null; literal: string | null; match: Template }
  | { kind: 'not'; check: Check }
  | { kind: 'and'; checks: Check[] }
  | { kind: 'or'; checks: Check[] };

/** A match string cut at its `%(key)s` substitutions: text, key, text, key, …, text. */
export type Template = string[];

/** Target keys are looked up literally (`%(target.user.id)s` reads the key "target.user.id"), as Python's % does. */
export type PolicyValues = Record<string, unknown>;

/** Python's str() of a JSON-ish value, which is what oslo.policy compares. */
export function pyStr(v: unknown): string {
  if (v === null || v === undefined) return 'None';
  if (v === true) return 'True';
  if (v === false) return 'False';
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return String(v);
  return JSON.stringify(v);
}

function parseTemplate(match: string, check: string): Template {
  const parts: string[] = [];
  let text = '';
  for (let i = 0; i < match.length; i++) {
    const c = match[i]!;
    if (c !== '%') { text += c; continue; }
    if (match[i + 1] === '%') { text += '%'; i++; continue; }
    const m = /^%\(([^)]*)\)s/.exec(match.slice(i));
    if (!m) throw new PolicySyntaxError(`'${check}': only %(name)s substitutions are supported after ':'`);
    parts.push(text, m[1]!);
    text = '';
    i += m[0].length - 1;
  }
  parts.push(text);
  return parts;
}

/** Fill a template from the target; null when the target lacks a key (the check then fails). */
function fill(t: Template, target: PolicyValues): string | null {
  if (t.length === 1) return t[0]!;
  let out = t[0]!;
  for (let i = 1; i < t.length; i += 2) {
    if (!Object.prototype.hasOwnProperty.call(target, t[i]!)) return null;
    out += pyStr(target[t[i]!]) + t[i + 1]!;
  }
  return out;
}

/** KIND when it is a Python literal oslo.policy would ast.literal_eval: its str(); otherwise null. */
function literalOf(kind: string): string | null {
  if (kind.length >= 2 && ((kind[0] === "'" && kind.endsWith("'")) || (kind[0] === '"' && kind.endsWith('"')))) return kind.slice(1, -1);
  if (kind === 'True' || kind === 'False' || kind === 'None') return kind;
  if (/^-?\d+$/.test(kind)) return String(Number.parseInt(kind, 10));
  if (/^-?\d+\.\d+$/.test(kind)) return String(Number.parseFloat(kind)).replace(/^(-?\d+)$/, '$1.0');
  return null;
}

function parseCheck(token: string): Check {
  if (token === '@') return { kind: 'true' };
  if (token === '!') return { kind: 'false' };
  const colon = token.indexOf(':');
  if (colon <= 0) throw new PolicySyntaxError(`'${token}' is not a check (expected KIND:MATCH, @ or !)`);
  const kind = token.slice(0, colon);
  const match = token.slice(colon + 1);
  if (kind === 'rule') {
    if (!match) throw new PolicySyntaxError(`'${token}': rule name missing`);
    return { kind: 'rule', name: match };
  }
  if (kind === 'role') return { kind: 'role', match: parseTemplate(match, token) };
  if (kind === 'http' || kind === 'https') throw new PolicySyntaxError(`'${token}': remote ${kind} checks are not supported`);
  const literal = literalOf(kind);
  return { kind: 'generic', kindText: kind, literal, path: literal === null ? kind.split('.') : null, match: parseTemplate(match, token) };
}

type Token = { t: '(' | ')' | 'and' | 'or' | 'not' } | { t: 'check'; check: Check; text: string };

/** oslo.policy's tokenizer: split on whitespace, then peel parentheses off each word's ends. */
function tokenize(rule: string): Token[] {
  const out: Token[] = [];
  for (const word of rule.split(/\s+/)) {
    if (!word) continue;
    let tok = word;
    while (tok.startsWith('(')) { out.push({ t: '(' }); tok = tok.slice(1); }
    if (!tok) continue;
    const unpeeled = tok;
    let trail = 0;
    while (tok.endsWith(')')) { trail++; tok = tok.slice(0, -1); }
    const lowered = tok.toLowerCase();
    if (lowered === 'and' || lowered === 'or' || lowered === 'not') out.push({ t: lowered });
    else if (tok) {
      // oslo.policy reads a quoted word as a string token, which no rule accepts.
      if (unpeeled.length >= 2 && /^(["']).*\1$/.test(unpeeled)) throw new PolicySyntaxError(`unexpected string ${unpeeled}`);
      out.push({ t: 'check', check: parseCheck(tok), text: tok });
    }
    for (let i = 0; i < trail; i++) out.push({ t: ')' });
  }
  return out;
}

/** Parse a check string; the empty string (or only spaces) always passes, as in oslo.policy. */
export function parseRule(rule: string | unknown[]): Check {
  if (Array.isArray(rule)) return parseListRule(rule);
  if (typeof rule !== 'string') throw new PolicySyntaxError(`a rule must be a string or a list of lists, got ${JSON.stringify(rule)}`);
  const tokens = tokenize(rule);
  if (tokens.length === 0) return { kind: 'true' };
  let pos = 0;
  const describe = (tk: Token | undefined) => (tk === undefined ? 'end of rule' : tk.t === 'check' ? `'${tk.text}'` : `'${tk.t}'`);
  const orExpr = (): Check => {
    const checks = [andExpr()];
    while (tokens[pos]?.t === 'or') { pos++; checks.push(andExpr()); }
    return checks.length === 1 ? checks[0]! : { kind: 'or', checks };
  };
  const andExpr = (): Check => {
    const checks = [notExpr()];
    while (tokens[pos]?.t === 'and') { pos++; checks.push(notExpr()); }
    return checks.length === 1 ? checks[0]! : { kind: 'and', checks };
  };
  const notExpr = (): Check => {
    const tk = tokens[pos];
    if (tk?.t === 'not') { pos++; return { kind: 'not', check: notExpr() }; }
    if (tk?.t === '(') {
      pos++;
      const inner = orExpr();
      if (tokens[pos]?.t !== ')') throw new PolicySyntaxError(`expected ')' but found ${describe(tokens[pos])}`);
      pos++;
      return inner;
    }
    if (tk?.t === 'check') { pos++; return tk.check; }
    throw new PolicySyntaxError(`expected a check but found ${describe(tk)}`);
  };
  const result = orExpr();
  if (pos !== tokens.length) throw new PolicySyntaxError(`unexpected ${describe(tokens[pos])}`);
  return result;
}

/** The pre-Kilo JSON form: a list of alternatives, each a list of checks that must all pass. */
function parseListRule(rule: unknown[]): Check {
  if (rule.length === 0) return { kind: 'true' };
  const alternatives: Check[] = [];
  for (const inner of rule) {
    const all = typeof inner === 'string' ? [inner] : inner;
    if (!Array.isArray(all)) throw new PolicySyntaxError(`list rules hold lists of check strings, got ${JSON.stringify(inner)}`);
    if (all.length === 0) continue;
    const checks = all.map((c) => {
      if (typeof c !== 'string') throw new PolicySyntaxError(`list rules hold check strings, got ${JSON.stringify(c)}`);
      return parseCheck(c);
    });
    alternatives.push(checks.length === 1 ? checks[0]! : { kind: 'and', checks });
  }
  if (alternatives.length === 0) return { kind: 'false' };
  return alternatives.length === 1 ? alternatives[0]! : { kind: 'or', checks: alternatives };
}

/** Every rule name a check refers to through rule:NAME. */
export function referencedRules(check: Check, into: string[] = []): string[] {
  switch (check.kind) {
    case 'rule': into.push(check.name); break;
    case 'not': referencedRules(check.check, into); break;
    case 'and': case 'or': for (const c of check.checks) referencedRules(c, into); break;
    default: break;
  }
  return into;
}

/** Credentials as a generic check reads them: the caller's attributes by dotted path. */
function findInCreds(value: unknown, path: string[], match: string): boolean {
  if (path.length === 0) return match === pyStr(value);
  if (value === null || typeof value !== 'object' || !Object.prototype.hasOwnProperty.call(value, path[0]!)) return false;
  const next = (value as Record<string, unknown>)[path[0]!];
  const rest = path.slice(1);
  if (Array.isArray(next)) return next.some((v) => findInCreds(v, rest, match));
  return findInCreds(next, rest, match);
}

export interface Evaluation {
  target: PolicyValues;
  creds: PolicyValues & { roles?: unknown };
  /** Resolves rule:NAME; undefined for a rule that does not exist (the check fails). */
  rule(name: string): Check | undefined;
}

export function evaluate(check: Check, ev: Evaluation, depth = 0): boolean {
  switch (check.kind) {
    case 'true': return true;
    case 'false': return false;
    case 'not': return !evaluate(check.check, ev, depth);
    case 'and': return check.checks.every((c) => evaluate(c, ev, depth));
    case 'or': return check.checks.some((c) => evaluate(c, ev, depth));
    case 'rule': {
      const r = ev.rule(check.name);
      // Cycles are refused when a policy is loaded; the depth bound is a second guard.
      return r !== undefined && depth < 64 && evaluate(r, ev, depth + 1);
    }
    case 'role': {
      const want = fill(check.match, ev.target);
      if (want === null || !Array.isArray(ev.creds.roles)) return false;
      const lower = want.toLowerCase();
      return ev.creds.roles.some((r) => typeof r === 'string' && r.toLowerCase() === lower);
    }
    case 'generic': {
      const match = fill(check.match, ev.target);
      if (match === null) return false;
      if (check.literal !== null) return match === check.literal;
      return findInCreds(ev.creds, check.path!, match);
    }
  }
}

/** The check string again, as oslo.policy's str() prints a tree (for messages and the sample file). */
export function ruleText(check: Check): string {
  const tpl = (t: Template) => t.map((p, i) => (i % 2 ? `%(${p})s` : p.replace(/%/g, '%%'))).join('');
  switch (check.kind) {
    case 'true': return '@';
    case 'false': return '!';
    case 'rule': return `rule:${check.name}`;
    case 'role': return `role:${tpl(check.match)}`;
    case 'generic': return `${check.kindText}:${tpl(check.match)}`;
    case 'not': return `not ${ruleText(check.check)}`;
    case 'and': return `(${check.checks.map(ruleText).join(' and ')})`;
    case 'or': return `(${check.checks.map(ruleText).join(' or ')})`;
  }
}
