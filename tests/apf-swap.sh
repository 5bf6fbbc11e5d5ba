#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Async page faults end to end, L1 side, the swap scenario: the series'
# kernel as an L2 guest under stock QEMU/KVM, QEMU in a memory cgroup
# that is squeezed well below what the guest uses while apf-work
# (tests/apf-work.c) runs in it, with swap on a device slowed by
# dm-delay (zram underneath, reads delayed).  Tasks read a large array
# at random beside tasks that only count, as the first x86 async PF
# posting measured: a read of a page that L1 swapped out takes the
# delay.  With async PF the faulting task sleeps and the counter runs;
# without (no-kvmapf), the vCPU waits.
#
# usage: apf-swap.sh [-a on|off] [-o OUTDIR] [-s SECONDS] [-t TIMEOUT]
#                    [-r READERS] [-c COUNTERS] [-m MiB] [-l MiB]
#                    [-d MS] [-b SECONDS] [-v VCPUS] [-q] [-H]
#                    [-M anon|memfd]
#   -a on|off   async PF in the guest (off: no-kvmapf); default on
#   -o OUTDIR   default $KVM_SELFTEST_LOGDIR/guest-apf-swap[-off]
#   -s SECONDS  how long apf-work runs after the guest is ready (40)
#   -t TIMEOUT  seconds before QEMU is killed (600)
#   -r READERS, -c COUNTERS  apf-work's tasks (2 and 2)
#   -m MiB      apf-work's array (192; the guest has 512 MiB)
#   -l MiB      QEMU's cgroup's memory.high, then memory.max, once
#               squeezed (128): about half of the array stays resident
#   -d MS       dm-delay's delay of each swap read (10)
#   -b SECONDS  apf-work runs this long before the squeeze (5): the
#               rates when nothing faults
#   -v VCPUS    the guest's vCPUs (2; 1 leaves L1 a CPU of its own)
#   -q          apf-work prints its seconds only at the end (benchmark:
#               its printing thread waits for a QEMU squeezed into swap)
#   -H          the guest takes cpu1 offline and back every 3 s meanwhile
#   -M anon|memfd  guest RAM: QEMU's default anonymous memory, or
#               memory-backend-memfd (shmem, the usual choice with
#               vhost-user); default anon
#
# Results in OUTDIR/checks.tap, one line per check; the figures in
# OUTDIR/result (one "name value" per line).  QEMU is found as by
# run-guest.sh (VMM_ROOT), dmsetup in the same root.  Exit 0 when every
# check passed, 1 otherwise, 2 when L1 lacks what the scenario needs
# (the message says what), 4 (skip) without QEMU.

here=$(cd "$(dirname "$0")" && pwd)
apf=on
secs=40
tmo=600
readers=2
counters=2
mib=192
lim=128
delay=10
base=5
hotplug=0
vcpus=2
quiet=0
backend=anon
out=
while getopts "a:o:s:t:r:c:m:l:d:b:v:qHM:h" opt; do
	case $opt in
	a) apf=$OPTARG ;;
	o) out=$OPTARG ;;
	s) secs=$OPTARG ;;
	t) tmo=$OPTARG ;;
	r) readers=$OPTARG ;;
	c) counters=$OPTARG ;;
	m) mib=$OPTARG ;;
	l) lim=$OPTARG ;;
	d) delay=$OPTARG ;;
	b) base=$OPTARG ;;
	v) vcpus=$OPTARG ;;
	q) quiet=1 ;;
	H) hotplug=1 ;;
	M) backend=$OPTARG ;;
	*) sed -n 's/^# \{0,1\}//; 13,34p' "$0" >&2; exit 2 ;;
	esac
done
for v in "$secs" "$tmo" "$readers" "$counters" "$mib" "$lim" "$delay" \
	 "$base" "$vcpus"; do
	case $v in
	'' | *[!0-9]*) echo "error: options take whole numbers, not '$v'" >&2
		exit 2 ;;
	esac
done
if [ "$vcpus" -lt 1 ] || [ "$vcpus" -gt 8 ]; then
	echo "error: -v takes 1 to 8 vCPUs, not $vcpus" >&2
	exit 2
fi
if [ $hotplug = 1 ] && [ "$vcpus" -lt 2 ]; then
	echo "error: -H takes cpu1 offline: it needs -v 2 or more" >&2
	exit 2
fi
case $apf in
on) name=guest-apf-swap; extra= ;;
off) name=guest-apf-swap-off; extra=no-kvmapf ;;
*) echo "error: -a on or -a off, not $apf" >&2; exit 2 ;;
esac
case $backend in
anon) mem= ;;
memfd) mem="-object memory-backend-memfd,id=ram,size=512M -machine memory-backend=ram"
	name=$name-memfd ;;
*) echo "error: -M anon or -M memfd, not $backend" >&2; exit 2 ;;
esac
out=${out:-${KVM_SELFTEST_LOGDIR:-./logs}/$name}
mkdir -p "$out" || exit 2
out=$(cd "$out" && pwd)
rm -f "$out"/*.log "$out/checks.tap" "$out/result" "$out/host-stats" \
	"$out/host-stats-dump" "$out"/memory-stat-* "$out/cpu-samples"

if [ -z "$VMM_ROOT" ] || [ ! -x "$VMM_ROOT/usr/bin/qemu-system-aarch64" ]; then
	echo "SKIP: no arm64 QEMU root (VMM_ROOT=$VMM_ROOT)"
	exit 4
fi
root=$VMM_ROOT
zram=/sys/block/zram0
cg=/sys/fs/cgroup
dm='apf-swap'
need() {
	echo "error: $*" >&2
	exit 2
}
dmsetup=
for p in sbin/dmsetup usr/sbin/dmsetup; do
	[ -x "$root/$p" ] && dmsetup=/$p && break
done
[ -n "$dmsetup" ] ||
	need "no dmsetup in $root: the harness's VMM root lists it (harness/guest.py VMM_PACKAGES)"
[ -d $zram ] || need "no $zram: the L1 kernel needs CONFIG_ZRAM"
grep -qw cgroup2 /proc/filesystems ||
	need "no cgroup2 file system: the L1 kernel needs CONFIG_CGROUPS and CONFIG_MEMCG"
for c in mkswap swapon swapoff; do
	command -v $c >/dev/null || need "no $c on L1's PATH"
done
[ "$(wc -l </proc/swaps)" -le 1 ] ||
	need "swap is already on in L1 ($(tail -n +2 /proc/swaps | cut -d' ' -f1)); this scenario owns L1's swap"

# shellcheck source-path=SCRIPTDIR source=l1-vmm.sh
. "$here/l1-vmm.sh"
# shellcheck source-path=SCRIPTDIR source=apf-l1.sh
. "$here/apf-l1.sh"

# dm_table MS: dm-delay over zram, reads delayed by MS, writes not.
# The third class, flushes (swap sends none), is delayed 50 ms so that
# the longest delay is 50 ms: below that, 6.12's dm-delay hands delayed
# reads to a kernel thread that spins while any waits, which takes one
# of L1's two CPUs from everything else for as long as reads are queued
# (6.1's uses a timer whatever the delay).
dm_table() {
	echo "0 $(cat $zram/size) delay /dev/zram0 0 $1 /dev/zram0 0 0 /dev/zram0 0 50"
}
dmsetup() {
	chroot "$root" "$dmsetup" "$@"
}
# The L1 side undone, whatever was done of it.
cleanup() {
	[ -n "$dev" ] && swapoff "$dev" 2>/dev/null
	dmsetup remove $dm 2>/dev/null
	echo 1 >$zram/reset 2>/dev/null
	rmdir "$cg/$dm" 2>/dev/null
	vmm_umount "$root" 2>/dev/null
}
dev=
vmm_mount "$root" "$here" "$out" || exit 1
trap 'cleanup; exit 1' INT TERM
# The last second apf-work reported.
tnow() {
	tr -d '\r' <"$out/console-vm.log" |
		sed -n 's/^apf-work: t=\([0-9]*\) .*/\1/p' | tail -n 1
}
# L1's uptime in hundredths of a second: whole seconds from date would
# put the squeeze up to a second off in apf-work's seconds.
cs() {
	awk '{ split($1, a, "."); print a[1] * 100 + a[2] }' /proc/uptime
}
# A counter of QEMU's cgroup (memory.stat).
cgstat() {
	awk -v k="$1" '$1 == k { print $2 }' "$cg/$dm/memory.stat"
}

setup_ok=0
{
	echo 1 >$zram/reset &&
	echo 1024M >$zram/disksize &&
	dmsetup create $dm --table "$(dm_table "$delay")" &&
	dev=/dev/$(dmsetup info -c --noheadings -o blkdevname $dm) &&
	mkswap "$dev" >/dev/null &&
	swapon "$dev" &&
	{ grep -q "^[^ ]* $cg cgroup2" /proc/mounts ||
		mount -t cgroup2 cgroup2 $cg; } &&
	echo +memory >$cg/cgroup.subtree_control &&
	{ [ -d "$cg/$dm" ] || mkdir "$cg/$dm"; } &&
	echo max >"$cg/$dm/memory.max" &&
	echo max >"$cg/$dm/memory.high" &&
	setup_ok=1
} >"$out/setup.log" 2>&1
if [ $setup_ok != 1 ]; then
	cat "$out/setup.log" >&2
	cleanup
	need "could not set up swap on dm-delay over zram and the memory cgroup (above)"
fi

start=$(date +%s)
# QEMU and its children in the cgroup; this shell back out of it.
echo $$ >"$cg/$dm/cgroup.procs"
# shellcheck disable=SC2086 # $mem: QEMU options, or nothing
l2_qemu vm "$mib" $mem
vm=$!
echo $$ >$cg/cgroup.procs

ready=0
wait_for "$out/console-vm.log" 'apf-work: ready' $((tmo - 120)) && ready=1
r0=$(cs)
took_ready=$(( $(date +%s) - start ))
squeezed=0
if [ $ready = 1 ]; then
	cpu_samples vm >"$out/cpu-samples" &
	sleep "$base"
	t_from=$(tnow)
	used=$(cat "$cg/$dm/memory.current")
	limit=$((lim * 1048576))
	# In seconds after apf-work's ready line; L1 sees that line up to
	# about a second late, so the squeeze is no earlier in its seconds.
	s0=$(cs)
	squeeze_at=$(( (s0 - r0) / 100 )).$(printf %02d $(( (s0 - r0) % 100 )))
	# memory.high first: reclaim without the OOM killer, the guest's
	# vCPUs throttled meanwhile; memory.max once usage is down to it (or
	# after 20 s), which then has little left to reclaim.  At once,
	# memory.max gave up after its 16 reclaim rounds with QEMU's THPs
	# all referenced and killed QEMU, on 6.12's bare base too.
	echo $limit >"$cg/$dm/memory.high"
	i=0
	while [ "$(cat "$cg/$dm/memory.current")" -gt "$limit" ] &&
		[ $i -lt 200 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	echo $limit >"$cg/$dm/memory.max" && squeezed=1
	t_done=$(tnow)
	s1=$(cs)
	took_squeeze=$(( (s1 - s0) / 100 )).$(printf %02d $(( (s1 - s0) % 100 )))
	in0=$(cgstat pgmajfault)
	cp "$cg/$dm/memory.stat" "$out/memory-stat-squeezed"
fi

# Until apf-work's last second: then no more delay and no more limit,
# so that its final sweep of every page is quick.
lifted=0
swap_peak=0
while [ $ready = 1 ] && kill -0 $vm 2>/dev/null; do
	kvm_apf_stats vm >"$out/host-stats.tmp"
	grep -q '^vm_' "$out/host-stats.tmp" &&
		mv "$out/host-stats.tmp" "$out/host-stats"
	sample_at_dump vm "$out/console-vm.log"
	s=$(cat "$cg/$dm/memory.swap.current" 2>/dev/null || echo 0)
	[ "$s" -gt "$swap_peak" ] && swap_peak=$s
	# apf-work's last second taken (its "sampled" line comes with -q
	# too; a late one only makes the final check slower)
	if [ $lifted = 0 ] &&
		grep -q '^apf-work: sampled' "$out/console-vm.log"; then
		in1=$(cgstat pgmajfault)
		cp "$cg/$dm/memory.stat" "$out/memory-stat-end"
		dmsetup suspend $dm && dmsetup load $dm --table "$(dm_table 0)" &&
			dmsetup resume $dm
		echo max >"$cg/$dm/memory.max"
		echo max >"$cg/$dm/memory.high"
		lifted=1
	fi
	sleep 1
done
kill -9 $vm 2>/dev/null
wait
took=$(( $(date +%s) - start ))
oom=$(awk '$1 == "oom_kill" { print $2 }' "$cg/$dm/memory.events" 2>/dev/null)
cleanup
trap - INT TERM

{
	echo "apf $apf"
	apf_figures "$out/console-vm.log" "$out/host-stats" vm
	echo "array_mib $mib"
	echo "limit_mib $lim"
	echo "delay_ms $delay"
	echo "vcpus $vcpus"
	echo "cgroup_used_bytes ${used:--}"
	echo "cgroup_limit_bytes ${limit:--}"
	echo "squeeze_seconds ${took_squeeze:--}"
	echo "squeeze_at ${squeeze_at:--}"
	echo "ready_uptime $(( r0 / 100 )).$(printf %02d $(( r0 % 100 )))"
	echo "t_squeeze_from ${t_from:--}"
	echo "t_squeeze_done ${t_done:--}"
	echo "swap_peak_bytes $swap_peak"
	echo "major_faults_during_run $(( ${in1:-0} - ${in0:-0} ))"
	echo "oom_kill ${oom:--}"
} >"$out/result"

{
	[ $ready = 1 ]; check workload-started $? \
		"apf-work ready after ${took_ready}s"
	[ $squeezed = 1 ] && [ "$swap_peak" -gt 0 ] &&
		[ $(( ${in1:-0} - ${in0:-0} )) -gt 0 ] && [ "${oom:-1}" = 0 ]
	check swapped $? "QEMU's cgroup limited to ${limit:-?} bytes, from ${used:-?} bytes in use, in ${took_squeeze:-?}s (apf-work seconds ${t_from:-?} to ${t_done:-?}); swap peak $swap_peak bytes, $(( ${in1:-0} - ${in0:-0} )) major faults in the cgroup (reads through dm-delay, ${delay} ms) while apf-work ran; oom_kill ${oom:--}"
	apf_checks "$apf"
	if [ "$apf" = on ]; then
		# Most swap-ins reach the guest as "not present": a random
		# swap-in that waits for its read inside KVM's FOLL_NOWAIT
		# lookup (6.1 without the series' mm change) cannot be.
		maj=$(( ${in1:-0} - ${in0:-0} ))
		[ "$maj" -gt 0 ] && [ $(( ${g_np:-0} * 2 )) -ge "$maj" ]
		check swap-ins-async $? "not-present ${g_np:--} for $maj major faults while apf-work ran (at least half)"
	fi
	[ $powered_off = 0 ]
	check poweroff $? "the guest powered off after ${took}s"
} >"$out/checks.tap"
cat "$out/checks.tap"
[ $failed -eq 0 ]
