/**
 * The architecture of a system from the ELF header of one of its programs, as libguestfs's
 * `file_architecture` does (names as `uname -m` prints them). ELF header: the System V ABI,
 * "ELF Header": e_ident[EI_CLASS] at 4, e_ident[EI_DATA] at 5, e_machine (16 bits) at 18.
 */

const EM: Record<number, string> = {
  2: 'sparc', 3: 'i386', 8: 'mips', 20: 'ppc', 21: 'ppc64', 22: 's390x', 40: 'arm', 43: 'sparc64',
  50: 'ia64', 62: 'x86_64', 183: 'aarch64', 243: 'riscv64', 258: 'loongarch64',
};

/** The architecture an ELF header names, or null when `head` is not an ELF file. */
export function elfArchitecture(head: Uint8Array): string | null {
  if (head.length < 20 || head[0] !== 0x7f || head[1] !== 0x45 || head[2] !== 0x4c || head[3] !== 0x46) return null;
  const is64 = head[4] === 2;
  const little = head[5] === 1;
  const machine = little ? head[18]! | (head[19]! << 8) : (head[18]! << 8) | head[19]!;
  let arch = EM[machine];
  if (arch === undefined) return `unknown-elf-machine-${machine}`;
  if (arch === 'ppc64' && little) arch = 'ppc64le';
  if (arch === 'mips' && is64) arch = 'mips64';
  if (arch === 'riscv64' && !is64) arch = 'riscv32';
  if (arch === 's390x' && !is64) arch = 's390';
  return arch;
}
