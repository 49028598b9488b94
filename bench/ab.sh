#!/bin/bash
# Rotated A/B timing for a noisy machine: runs each command N times, interleaved, with the order
# rotated every round (so no command always runs first after the others' files were deleted),
# and prints the minimum, first quartile and median wall time and the median user and system
# time (GNU time). $OUT names a scratch output file, removed after every run.
#   bash bench/ab.sh 9 "qemu|qemu-img convert -O qcow2 in.raw \$OUT" "diskhub|node packages/cli/bin/diskhub.js img convert -O qcow2 in.raw \$OUT"
N=$1; shift
declare -A W U S
specs=("$@"); n=${#specs[@]}
OUT=${TMPDIR:-/tmp}/ab-out.$$
for i in $(seq "$N"); do
  for k in $(seq 0 $((n - 1))); do
    spec=${specs[$(( (k + i) % n ))]}
    label=${spec%%|*}; cmd=${spec#*|}
    rm -f "$OUT"
    /usr/bin/time -o "$OUT.time" -f "%e %U %S" bash -c "OUT=$OUT; $cmd" > /dev/null 2>&1
    read -r w u s < <(tail -1 "$OUT.time")
    rm -f "$OUT"
    W[$label]+="$w "; U[$label]+="$u "; S[$label]+="$s "
  done
done
rm -f "$OUT.time"
q() { tr ' ' '\n' <<< "$1" | grep . | sort -n | awk -v p="$2" '{a[NR] = $1} END {print a[int((NR - 1) * p) + 1]}'; }
for spec in "$@"; do
  label=${spec%%|*}
  echo "$label: min $(q "${W[$label]}" 0) q1 $(q "${W[$label]}" 0.25) med $(q "${W[$label]}" 0.5)  user med $(q "${U[$label]}" 0.5) sys med $(q "${S[$label]}" 0.5)"
done
