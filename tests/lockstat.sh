#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Run a KVM selftest (the binary beside this script, and its arguments)
# with lock statistics on, then print kvm->mmu_lock's /proc/lock_stat
# lines between "lockstat: begin" and "lockstat: end".  Needs a kernel
# with CONFIG_LOCK_STAT; exits 4 (skip) without one.
#
# usage: lockstat.sh TEST [ARGS...]
cd "$(dirname "$0")" || exit 2
[ $# -gt 0 ] || { echo "usage: $0 TEST [ARGS...]" >&2; exit 2; }
if [ ! -w /proc/sys/kernel/lock_stat ]; then
	echo "SKIP: no /proc/sys/kernel/lock_stat (CONFIG_LOCK_STAT)"
	exit 4
fi
test=$1
shift
echo 0 >/proc/lock_stat
echo 1 >/proc/sys/kernel/lock_stat
"./$test" "$@"
rc=$?
echo 0 >/proc/sys/kernel/lock_stat
echo "lockstat: begin"
# rwlock_init(&(kvm)->mmu_lock) names the class "&(kvm)->mmu_lock"
grep -E '^ *&\(?kvm\)?->mmu_lock(-[WR])?:' /proc/lock_stat
echo "lockstat: end"
exit $rc
