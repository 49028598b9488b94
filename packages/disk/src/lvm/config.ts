/**
 * LVM2's text configuration format, as used for VG metadata (LVM2 lib/config): sections
 * `name { ... }`, assignments `key = value` where a value is a string, a number or an array
 * `[ v, v ]`, and `#` comments. The text comes from the disk: nesting, sizes and counts are
 * bounded and every syntax error is an ECORRUPT naming the line.
 */
import { DiskError } from '../errors.js';

export type ConfigValue = string | number | ConfigValue[];
export interface ConfigSection {
  [key: string]: ConfigValue | ConfigSection;
}

const MAX_DEPTH = 32;
const MAX_ARRAY = 1 << 16;
const NAME = /[A-Za-z0-9_.+\-@/:]/;

export function isSection(v: ConfigValue | ConfigSection | undefined): v is ConfigSection {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function parseLvmConfig(text: string): ConfigSection {
  let pos = 0;
  let line = 1;
  const fail = (what: string): never => { throw new DiskError('ECORRUPT', `LVM metadata line ${line}: ${what}`); };

  const skip = () => {
    for (;;) {
      const c = text[pos];
      if (c === '\n') { line++; pos++; }
      else if (c === ' ' || c === '\t' || c === '\r') pos++;
      else if (c === '#') { while (pos < text.length && text[pos] !== '\n') pos++; }
      else return;
    }
  };

  const name = (): string => {
    const from = pos;
    while (pos < text.length && NAME.test(text[pos]!)) pos++;
    if (pos === from) fail(`expected a name, found ${JSON.stringify(text[pos] ?? 'end of text')}`);
    return text.slice(from, pos);
  };

  const string = (): string => {
    pos++; // opening quote
    let s = '';
    for (;;) {
      if (pos >= text.length) fail('unterminated string');
      const c = text[pos++]!;
      if (c === '"') return s;
      if (c === '\\' && pos < text.length) s += text[pos++];
      else { if (c === '\n') line++; s += c; }
    }
  };

  const scalar = (): string | number => {
    if (text[pos] === '"') return string();
    const from = pos;
    while (pos < text.length && /[0-9.eE+\-]/.test(text[pos]!)) pos++;
    const raw = text.slice(from, pos);
    const n = Number(raw);
    if (raw === '' || !Number.isFinite(n)) fail(`bad value ${JSON.stringify(raw || text[pos] || 'end of text')}`);
    if (Number.isInteger(n) && !Number.isSafeInteger(n)) fail(`number ${raw} is too large`);
    return n;
  };

  const value = (): ConfigValue => {
    if (text[pos] !== '[') return scalar();
    pos++;
    const items: ConfigValue[] = [];
    for (;;) {
      skip();
      if (text[pos] === ']') { pos++; return items; }
      if (items.length >= MAX_ARRAY) fail('array too long');
      items.push(scalar());
      skip();
      if (text[pos] === ',') pos++;
      else if (text[pos] !== ']') fail(`expected ',' or ']' in array`);
    }
  };

  const section = (depth: number, closing: boolean): ConfigSection => {
    if (depth > MAX_DEPTH) fail('sections nested too deeply');
    const out: ConfigSection = Object.create(null);
    for (;;) {
      skip();
      if (pos >= text.length) {
        if (closing) fail("missing '}'");
        return out;
      }
      if (text[pos] === '}') {
        if (!closing) fail("unexpected '}'");
        pos++;
        return out;
      }
      const key = name();
      skip();
      if (text[pos] === '{') { pos++; out[key] = section(depth + 1, true); }
      else if (text[pos] === '=') { pos++; skip(); out[key] = value(); }
      else fail(`expected '=' or '{' after ${key}`);
    }
  };

  return section(0, false);
}
