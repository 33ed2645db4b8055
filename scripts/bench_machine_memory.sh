#!/usr/bin/env bash
# How fast this machine fills new memory pages, 1 GiB at a time, as page cache grows.
#
#   bash scripts/bench_machine_memory.sh [GIB=12] [DIR=/dev/shm]
#
# Writes GIB files of 1 GiB each into DIR (tmpfs by default: no disk involved) and prints the
# seconds each took with the machine's memory in use before it (MemTotal - MemFree), then
# rewrites two of them in place and reads them back. On a VM whose host backs only part of
# the guest's memory, pages past that part are slower to fill; every system whose page cache
# grows there (StreamHouse's local store and Kafka's logs alike) pays it, so a benchmark round
# run there is not comparable with one run below it. Removes its files on exit.
set -euo pipefail
gib=${1:-12}
dir=${2:-/dev/shm}
work=$(mktemp -d "$dir/memprobe.XXXXXX")
trap 'rm -rf "$work"' EXIT

in_use_gb() {
    awk '/^MemTotal:/ {t=$2} /^MemFree:/ {f=$2} END {printf "%.1f", (t-f)/1048576}' /proc/meminfo
}

timed() {
    local start end
    start=$(date +%s.%N)
    "$@"
    end=$(date +%s.%N)
    echo "$end - $start" | bc
}

echo "| step | memory in use before, GB | seconds per GiB |"
echo "| --- | --- | --- |"
for i in $(seq 1 "$gib"); do
    before=$(in_use_gb)
    s=$(timed dd if=/dev/zero of="$work/f$i" bs=1M count=1024 status=none)
    echo "| write new $i | $before | $s |"
done
for i in 2 "$gib"; do
    s=$(timed dd if=/dev/zero of="$work/f$i" bs=1M count=1024 conv=notrunc status=none)
    echo "| rewrite $i in place | $(in_use_gb) | $s |"
done
for i in 2 "$gib"; do
    s=$(timed dd if="$work/f$i" of=/dev/null bs=1M status=none)
    echo "| read $i | $(in_use_gb) | $s |"
done
