/** The identity service's public names, where the rest of the service has always imported them from. */
export { AuthError, DEFAULT_DOMAIN, IMPLIED_ROLES, Identity, keystoneTime, now, type AuthContext, type IdentityOptions } from './domain/identity.js';
export { insertIgnore } from './db/insert-ignore.js';
