export { NbdServer, MAX_REQUEST, MAX_OPTION, type NbdExport, type NbdServerOptions } from './server.js';
export * as protocol from './protocol.js';
