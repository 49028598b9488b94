#!/usr/bin/env node
// Thin launcher so the bin link exists before the TypeScript build has run.
import { main } from '../dist/src/main.js';
main(process.argv.slice(2)).then((code) => { process.exitCode = code; });
