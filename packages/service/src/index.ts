export { loadConfig, ConfigError, type ServiceConfig } from './config.js';
export { startService, type Service } from './server.js';
export { serveMain } from './main.js';
export { openDatabase, dialectOf, type Db } from './db/connect.js';
export { jsonLogger, type Logger } from './log.js';
