/** V8 tuning for the commands that move gigabytes (its own module: node:v8 costs every command that loads it 9 M instructions). */
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
