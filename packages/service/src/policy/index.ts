/** The policy layer: the rule language, Glance 25's defaults and the Images API's checks. */
export { Policy, PolicyNotAuthorized, PolicyFileError, type PolicyCredentials, type PolicyOptions } from './policy.js';
export { PolicySyntaxError, parseRule } from './language.js';
export { GLANCE_DEFAULTS, type RuleDefault } from './glance-defaults.js';
export { DiscoveryApiPolicy, ImageApiPolicy, MemberApiPolicy, PolicyForbidden, PolicyHidesImage, imageTarget, proposedImageTarget, type PolicyImage } from './image-api.js';
