/**
 * The policy: one named rule per Glance action, Glance 25's defaults, an operator's policy
 * file over them (oslo.policy's YAML or JSON syntax, DISKHUB_POLICY_FILE), and enforcement.
 *
 * As oslo.policy does with Glance's registered defaults: a rule the file names replaces the
 * default outright; a rule it leaves out keeps its default, OR'd with the deprecated default
 * while enforce_new_defaults is off (Glance 25's setting). Unlike oslo.policy, a file whose
 * rule does not parse, refers to a rule that exists nowhere, or refers to itself through a
 * cycle stops the start with an error naming the rule; oslo.policy logs those and denies.
 */
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { GLANCE_DEFAULTS, type RuleDefault } from './glance-defaults.js';
import { PolicySyntaxError, evaluate, parseRule, referencedRules, ruleText, type Check } from './language.js';

/** The caller, as oslo.context's to_policy_values gives it to a check (plus Glance's is_admin). */
export interface PolicyCredentials {
  user_id: string;
  project_id: string | null;
  domain_id?: string | null;
  roles: string[];
  is_admin: boolean;
}

/** A caller refused by a rule; HTTP 403 with Glance's message. */
export class PolicyNotAuthorized extends Error {
  readonly status = 403;
  constructor(readonly rule: string) {
    super(`You are not authorized to complete ${rule} action.`);
    this.name = 'PolicyNotAuthorized';
  }
}

/** A policy file that cannot be used: the service does not start. */
export class PolicyFileError extends Error {
  constructor(message: string, readonly rule?: string) { super(message); this.name = 'PolicyFileError'; }
}

export interface PolicyOptions {
  /** oslo.policy's [oslo_policy] enforce_new_defaults: drop the deprecated defaults (Glance 25: false). */
  enforceNewDefaults?: boolean;
  /**
   * Refuse callers whose token is not project-scoped on the rules Glance registers for
   * project scope (all of its API rules). Default true. Glance 25 leaves enforce_scope off, and
   * even with it on oslo.policy takes an unscoped token for a project-scoped one, so Glance
   * creates images owned by nobody for an unscoped token; diskhub refuses both domain-scoped
   * and unscoped tokens with the 403 Glance gives for a scope mismatch under enforce_scope.
   */
  enforceScope?: boolean;
}

export class Policy {
  private constructor(
    private readonly rules: Map<string, Check>,
    /** Where the rules came from, for messages. */
    readonly source: string,
    /** Rules that only a project-scoped token may pass (empty when scope is not enforced). */
    private readonly projectScoped: Set<string>,
  ) {}

  /** Glance 25's defaults, with a policy file over them when `file` is given. */
  static async load(file?: string, options: PolicyOptions = {}): Promise<Policy> {
    if (!file) return Policy.build(new Map(), 'defaults', options);
    let text: string;
    try { text = await readFile(file, 'utf8'); } catch (e) { throw new PolicyFileError(`cannot read policy file ${file}: ${(e as Error).message}`); }
    return Policy.fromText(text, file, options);
  }

  static defaults(options: PolicyOptions = {}): Policy {
    return Policy.build(new Map(), 'defaults', options);
  }

  /** Another service's registered rules (the identity API's Keystone rules), with no file over them. */
  static ofRules(defaults: readonly RuleDefault[], options: PolicyOptions = {}): Policy {
    return Policy.build(new Map(), 'defaults', options, defaults);
  }

  /** A policy from the text of an oslo.policy YAML or JSON file (`name` is used in messages). */
  static fromText(text: string, name: string, options: PolicyOptions = {}): Policy {
    let doc: unknown;
    try {
      // YAML 1.2 reads JSON too, but its messages for broken JSON are about YAML.
      doc = /^\s*\{/.test(text) ? JSON.parse(text) : parseYaml(text);
    } catch (e) {
      throw new PolicyFileError(`policy file ${name} is neither valid YAML nor JSON: ${(e as Error).message}`);
    }
    if (doc === null || doc === undefined) doc = {}; // an empty file (or only comments) overrides nothing
    if (typeof doc !== 'object' || Array.isArray(doc)) throw new PolicyFileError(`policy file ${name}: expected a mapping of rule names to check strings`);
    const fileRules = new Map<string, Check>();
    for (const [rule, value] of Object.entries(doc as Record<string, unknown>)) {
      try {
        fileRules.set(rule, parseRule(value === null ? '' : (value as string | unknown[])));
      } catch (e) {
        if (e instanceof PolicySyntaxError) throw new PolicyFileError(`policy file ${name}: rule '${rule}' does not parse: ${e.message}`, rule);
        throw e;
      }
    }
    return Policy.build(fileRules, name, options);
  }

  private static build(fileRules: Map<string, Check>, source: string, options: PolicyOptions, defaults: readonly RuleDefault[] = GLANCE_DEFAULTS): Policy {
    const rules = new Map(fileRules);
    for (const d of defaults) {
      if (rules.has(d.name)) continue;
      rules.set(d.name, effectiveDefault(d, options));
    }
    for (const [name, check] of rules) {
      for (const ref of referencedRules(check)) {
        if (!rules.has(ref)) throw new PolicyFileError(`policy ${source}: rule '${name}' refers to rule:${ref}, which is not defined`, name);
      }
    }
    const cycle = findCycle(rules);
    if (cycle) throw new PolicyFileError(`policy ${source}: rule '${cycle[0]}' refers to itself through ${cycle.map((r) => `rule:${r}`).join(' -> ')}`, cycle[0]);
    const projectScoped = new Set(options.enforceScope === false ? [] : defaults.filter((d) => d.scopeTypes?.includes('project')).map((d) => d.name));
    return new Policy(rules, source, projectScoped);
  }

  /** Whether `creds` may perform `rule` on `target`. An unregistered rule name is a programming error. */
  enforce(rule: string, target: Record<string, unknown>, creds: PolicyCredentials): boolean {
    const check = this.rules.get(rule);
    if (!check) throw new Error(`policy rule '${rule}' is not registered`);
    if (this.projectScoped.has(rule) && (!creds.project_id || creds.domain_id)) return false;
    return evaluate(check, { target, creds: creds as unknown as Record<string, unknown>, rule: (n) => this.rules.get(n) });
  }

  /** As enforce, but throws PolicyNotAuthorized on refusal. */
  authorize(rule: string, target: Record<string, unknown>, creds: PolicyCredentials): void {
    if (!this.enforce(rule, target, creds)) throw new PolicyNotAuthorized(rule);
  }

  /** Glance's RequestContext.is_admin: the context_is_admin rule, checked against the caller itself. */
  isAdmin(creds: Omit<PolicyCredentials, 'is_admin'> & { is_admin?: boolean }): boolean {
    const c = { ...creds, is_admin: false };
    return this.enforce('context_is_admin', c as unknown as Record<string, unknown>, c);
  }

  /** The rule in force, as a check string (for `diskhub` diagnostics and tests). */
  ruleText(rule: string): string | undefined {
    const check = this.rules.get(rule);
    return check && ruleText(check);
  }

  get ruleNames(): string[] { return [...this.rules.keys()]; }
}

function effectiveDefault(d: RuleDefault, options: PolicyOptions): Check {
  const check = parseRule(d.check);
  if (d.deprecated === undefined || options.enforceNewDefaults || d.deprecated === d.check) return check;
  return { kind: 'or', checks: [check, parseRule(d.deprecated)] };
}

/** A cycle of rule:NAME references, as the list of rule names from and back to its first, or null. */
function findCycle(rules: Map<string, Check>): string[] | null {
  const state = new Map<string, 'visiting' | 'done'>();
  const stack: string[] = [];
  const visit = (name: string): string[] | null => {
    const s = state.get(name);
    if (s === 'done') return null;
    if (s === 'visiting') return [...stack.slice(stack.indexOf(name)), name];
    state.set(name, 'visiting');
    stack.push(name);
    for (const ref of referencedRules(rules.get(name)!)) {
      const found = visit(ref);
      if (found) return found;
    }
    stack.pop();
    state.set(name, 'done');
    return null;
  };
  for (const name of rules.keys()) {
    const found = visit(name);
    if (found) return found;
  }
  return null;
}
