/**
 * External identity: the service validates the tokens its clients bring against a real
 * Keystone (v3), as keystonemiddleware does: with a service token of its own it asks
 * GET /v3/auth/tokens about each user token, and caches the answer briefly.
 */
import type { AuthContext } from './identity.js';
import { AuthError } from './identity.js';

export interface KeystoneClientOptions {
  /** Keystone's v3 URL, e.g. http://keystone:5000/v3. */
  url: string;
  username: string;
  password: string;
  project: string;
  userDomain?: string;
  projectDomain?: string;
  /** Seconds a validation is trusted before asking again (keystonemiddleware: 300). */
  cacheSeconds?: number;
}

interface TokenBody {
  token: {
    methods?: string[];
    user: { id: string; name: string };
    project?: { id: string; name: string };
    domain?: { id: string; name: string };
    roles?: { id: string; name: string }[];
    expires_at: string;
    issued_at?: string;
    audit_ids?: string[];
  };
}

export class KeystoneClient {
  private serviceToken: { id: string; expires: number } | null = null;
  private readonly cache = new Map<string, { ctx: AuthContext; until: number }>();
  private readonly base: string;

  constructor(private readonly opts: KeystoneClientOptions) {
    this.base = opts.url.replace(/\/+$/, '');
  }

  private async getServiceToken(): Promise<string> {
    if (this.serviceToken && this.serviceToken.expires - Date.now() > 60_000) return this.serviceToken.id;
    const o = this.opts;
    const r = await fetch(`${this.base}/auth/tokens?nocatalog`, {
      method: 'POST', headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({ auth: {
        identity: { methods: ['password'], password: { user: { name: o.username, password: o.password, domain: { name: o.userDomain ?? 'Default' } } } },
        scope: { project: { name: o.project, domain: { name: o.projectDomain ?? 'Default' } } },
      } }),
      signal: AbortSignal.timeout(10_000),
    });
    if (r.status !== 201) throw new Error(`external Keystone refused the service credentials (${r.status})`);
    const body = await r.json() as TokenBody;
    this.serviceToken = { id: r.headers.get('x-subject-token')!, expires: Date.parse(body.token.expires_at) };
    return this.serviceToken.id;
  }

  /** The catalog `token` sees (GET /v3/auth/catalog with the user's own token). */
  async catalog(token: string): Promise<unknown[]> {
    const r = await fetch(`${this.base}/auth/catalog`, { headers: { 'X-Auth-Token': token, Accept: 'application/json' }, signal: AbortSignal.timeout(10_000) });
    if (r.status !== 200) throw new Error(`external Keystone refused the catalog (${r.status})`);
    return ((await r.json()) as { catalog?: unknown[] }).catalog ?? [];
  }

  async validate(token: string): Promise<AuthContext> {
    const cached = this.cache.get(token);
    if (cached && cached.until > Date.now()) return cached.ctx;
    let r = await this.ask(token, await this.getServiceToken());
    if (r.status === 401) { this.serviceToken = null; r = await this.ask(token, await this.getServiceToken()); }
    if (r.status === 404 || r.status === 401) throw new AuthError(401, 'The request you have made requires authentication.');
    if (r.status !== 200) throw new Error(`external Keystone answered ${r.status} validating a token`);
    const t = (await r.json() as TokenBody).token;
    const roles = t.roles ?? [];
    const roleNames = new Set(roles.map((x) => x.name));
    const expires = Date.parse(t.expires_at);
    const ctx: AuthContext = {
      tokenId: token, userId: t.user.id, userName: t.user.name,
      projectId: t.project?.id ?? null, projectName: t.project?.name ?? null, domainScope: t.domain?.id ?? null,
      roles, roleNames, isAdmin: roleNames.has('admin'), methods: t.methods ?? [],
      issuedAt: t.issued_at ?? '', expiresAt: t.expires_at, auditId: t.audit_ids?.[0] ?? '',
    };
    if (this.cache.size > 10_000) this.cache.clear();
    this.cache.set(token, { ctx, until: Math.min(Date.now() + (this.opts.cacheSeconds ?? 60) * 1000, expires) });
    return ctx;
  }

  private ask(token: string, serviceToken: string): Promise<Response> {
    return fetch(`${this.base}/auth/tokens?nocatalog`, {
      headers: { 'X-Auth-Token': serviceToken, 'X-Subject-Token': token, Accept: 'application/json' },
      signal: AbortSignal.timeout(10_000),
    });
  }
}
