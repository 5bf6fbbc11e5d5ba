#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# two-vms.sh TEST [ARGS...]: run two copies of a KVM selftest at once, each
# with its own VM, and print both outputs (prefixed "A: ", "B: ").  Used by
# the benchmark as a control: two vCPUs' worth of work with no KVM lock
# shared between them.
[ $# -ge 1 ] || { echo "usage: $0 TEST [ARGS...]" >&2; exit 2; }
dir=$(mktemp -d) || exit 2
./"$@" >"$dir/a" 2>&1 &
a=$!
./"$@" >"$dir/b" 2>&1 &
b=$!
wait $a; ra=$?
wait $b; rb=$?
sed 's/^/A: /' "$dir/a"
sed 's/^/B: /' "$dir/b"
rm -rf "$dir"
[ $ra -eq 0 ] && [ $rb -eq 0 ]
