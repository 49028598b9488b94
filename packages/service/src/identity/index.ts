/** The built-in identity service (Keystone v3): domain service, repository, password hashing, policy. */
export { AuthError, DEFAULT_DOMAIN, IMPLIED_ROLES, Identity, UNAUTHENTICATED, keystoneTime, now, type AuthContext, type IdentityOptions, type LoginSource } from './service.js';
export { IdentityRepository } from './repository.js';
export { HashingBusy, PasswordHasher } from './passwords.js';
export { LoginThrottle, type ThrottleLimits } from './login-throttle.js';
export { IdentityForbidden, IdentityPolicy } from './policy.js';
