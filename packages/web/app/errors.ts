/**
 * API errors in words: the HTTP status decides the sentence, and the service's own message
 * (never the raw JSON body) fills in the detail where it helps.
 */
import { ApiError } from './api.js';
import type { Translate } from './i18n.js';

export type ErrorContext = 'login' | 'delete' | undefined;

export function describeError(t: Translate, e: unknown, context?: ErrorContext): string {
  if (!(e instanceof ApiError)) return t('error.generic', { detail: (e as Error)?.message ?? String(e) });
  const detail = e.message;
  switch (e.status) {
    case 0: return t('error.network');
    case 400: return t('error.badRequest', { detail });
    case 401: return context === 'login' ? t('error.login') : t('error.unauthorized');
    case 403:
      if (context === 'delete' && /protected/i.test(detail)) return t('error.protected');
      return t('error.forbidden', { detail });
    case 404: return t('error.notFound');
    case 409: return t('error.conflict', { detail });
    case 413: return t('error.tooLarge', { detail });
    case 415: return t('error.unsupportedType');
    case 503: return t('error.unavailable');
    default: return e.status >= 500 ? t('error.server') : t('error.generic', { detail });
  }
}
