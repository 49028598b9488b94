/**
 * V8 tuning for commands whose JavaScript is little next to their I/O, in its own module:
 * loading node:v8 costs every command that imports it 7.5-9 M instructions of start-up (the
 * code cache's warm-up stubs the flag calls out: warm-code-cache.cjs).
 */
import { setFlagsFromString } from 'node:v8';

/**
 * How long V8 runs a function before its optimising compiler takes it (in "ticks" of executed
 * bytecode; V8's default is 3). A convert's, rebase's or commit's JavaScript is per-chunk
 * bookkeeping around system calls and native work: compiling it with TurboFan cost 0.15-0.2 s
 * of CPU on background threads for a 2 GiB image and saved less main-thread time than that, on
 * a machine whose cores are busy with the copy itself. Raising the threshold leaves that code to
 * the baseline compiler while loops that run millions of times are still optimised
 * (BENCHMARKS.md: qcow2→raw user time 0.44 → 0.30 s; a compare-only rebase 0.39–0.45 → 0.24–0.39 s).
 */
const TICKS_BEFORE_OPTIMIZATION = 40;

/** For commands that move gigabytes through little JavaScript: see TICKS_BEFORE_OPTIMIZATION. */
export function optimiseLess(): void {
  setFlagsFromString(`--ticks-before-optimization=${TICKS_BEFORE_OPTIMIZATION}`);
}

/**
 * For a short command whose JavaScript is a few loops over tables (resize, snapshot): the
 * baseline compiler only. TurboFan compiled the writable open's and the refcount walk's loops on
 * a background thread for more instructions than it saved (`img resize +1G` of a 2 GiB qcow2:
 * 184 M -> 150 M instructions under callgrind, BENCHMARKS.md). Set before any of their code is hot.
 */
export function baselineOnly(): void {
  setFlagsFromString('--max-opt=1');
}
