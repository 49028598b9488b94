/**
 * Failed logins are limited per user and per client address, on each API node: past the
 * limit within the window, a login is refused at once (429 with Retry-After) without spending
 * a password hash. Keystone's own lockout (lockout_failure_attempts) is in the database and
 * holds across nodes; this throttle bounds what a flood costs before it gets that far, for
 * user names that exist or not alike.
 */
export interface ThrottleLimits {
  /** Failures one user name may have within the window. */
  perUser: number;
  /** Failures one address may have within the window. */
  perAddress: number;
  windowMs: number;
}

export const DEFAULT_THROTTLE: ThrottleLimits = { perUser: 10, perAddress: 50, windowMs: 60_000 };
/** Keys remembered at most (the oldest are forgotten first), so a spray of names is bounded in memory. */
const MAX_KEYS = 50_000;

export class LoginThrottle {
  private readonly failures = new Map<string, number[]>();

  constructor(readonly limits: ThrottleLimits = DEFAULT_THROTTLE) {}

  /** Seconds to wait before `user` may try again from `address`, or 0. */
  retryAfter(user: string, address: string, now = Date.now()): number {
    const wait = (key: string, limit: number) => {
      const times = this.recent(key, now);
      return times.length >= limit ? Math.ceil((times[times.length - limit]! + this.limits.windowMs - now) / 1000) : 0;
    };
    return Math.max(wait(`u:${user}`, this.limits.perUser), wait(`a:${address}`, this.limits.perAddress));
  }

  failed(user: string, address: string, now = Date.now()): void {
    for (const key of [`u:${user}`, `a:${address}`]) {
      const times = this.recent(key, now);
      times.push(now);
      this.failures.delete(key);
      this.failures.set(key, times);
    }
    while (this.failures.size > MAX_KEYS) this.failures.delete(this.failures.keys().next().value!);
  }

  succeeded(user: string): void { this.failures.delete(`u:${user}`); }

  private recent(key: string, now: number): number[] {
    const times = this.failures.get(key) ?? [];
    while (times.length && times[0]! <= now - this.limits.windowMs) times.shift();
    return times;
  }
}
