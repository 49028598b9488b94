/**
 * Node's zlib and crypto modules, loaded on first use. Loading node:zlib costs every process
 * about as much as a quarter of Node's own start (22 M instructions under callgrind, node:crypto
 * 9 M), and the engine imported them from modules every command loads (the qcow2 driver, LUKS,
 * the CRC code) although most commands never compress, hash or encrypt: `img info` paid for
 * both. The bundle of the CLI turns these into require calls made when first needed.
 */
import { createRequire } from 'node:module';

const requireBuiltin = createRequire(import.meta.url);
let zlibModule: typeof import('node:zlib') | undefined;
let cryptoModule: typeof import('node:crypto') | undefined;

export const zlib = (): typeof import('node:zlib') => (zlibModule ??= requireBuiltin('node:zlib') as typeof import('node:zlib'));
export const crypto = (): typeof import('node:crypto') => (cryptoModule ??= requireBuiltin('node:crypto') as typeof import('node:crypto'));
