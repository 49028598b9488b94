/**
 * The directories a filesystem reader read last, parsed: `ls -l` and virt-ls walks list a
 * directory and then look up every name in it, which would otherwise re-read and re-parse the
 * directory once per name. Bounded in count; the readers only cache directories of bounded size.
 */
export class RecentDirectories<K, V> {
  private readonly entries = new Map<K, V>();
  constructor(private readonly max = 8) {}

  get(key: K): V | undefined {
    const v = this.entries.get(key);
    if (v !== undefined) {
      // Most recent last.
      this.entries.delete(key);
      this.entries.set(key, v);
    }
    return v;
  }

  set(key: K, value: V): void {
    this.entries.delete(key);
    if (this.entries.size >= this.max) this.entries.delete(this.entries.keys().next().value as K);
    this.entries.set(key, value);
  }
}
