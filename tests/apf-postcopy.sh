#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Async page faults end to end, L1 side: the series' kernel as an L2
# guest under stock QEMU/KVM, postcopy-migrated between two QEMU
# processes in L1 while apf-work (tests/apf-work.c) runs in it: tasks
# that read a 64 MiB array at random beside tasks that only count, two
# of each on the guest's two vCPUs (as the first x86 async PF posting
# measured, more tasks than vCPUs, so that a vCPU held by a fault holds
# up a counter too).  After the
# switch every page the destination lacks is fetched from the source
# through QEMU's userfaultfd handler, so the vCPUs' stage-2 faults on
# them are slow: with async PF the faulting task sleeps and the counter
# runs; without (no-kvmapf), the vCPU waits.
#
# usage: apf-postcopy.sh [-a on|off] [-o OUTDIR] [-s SECONDS] [-t TIMEOUT]
#                        [-r READERS] [-c COUNTERS] [-H] [-q] [-A ARGS]
#   -a on|off   async PF in the guest (off: no-kvmapf); default on
#   -A ARGS     appended to the guest's kernel command line (repeatable)
#   -o OUTDIR   default $KVM_SELFTEST_LOGDIR/guest-apf-postcopy[-off]
#   -s SECONDS  how long apf-work runs after the guest is ready (30)
#   -t TIMEOUT  seconds before both QEMUs are killed (900)
#   -r READERS, -c COUNTERS  apf-work's tasks (2 and 2)
#   -H          the guest takes cpu1 offline and back every 3 s meanwhile
#   -q          apf-work prints its seconds only at the end (benchmark:
#               the destination QEMU writes the console from guest pages
#               it may still have to fetch, which can hold up the task)
#
# Results in OUTDIR/checks.tap, one line per check; the figures in
# OUTDIR/result (one "name value" per line).  QEMU is found as by
# run-guest.sh (VMM_ROOT).  Exit 0 when every check passed, 1 otherwise,
# 4 (skip) without QEMU.

here=$(cd "$(dirname "$0")" && pwd)
apf=on
secs=30
tmo=900
readers=2
counters=2
hotplug=0
quiet=0
out=
more=
while getopts "a:o:s:t:r:c:HqA:h" opt; do
	case $opt in
	a) apf=$OPTARG ;;
	A) more="$more $OPTARG" ;;
	o) out=$OPTARG ;;
	s) secs=$OPTARG ;;
	t) tmo=$OPTARG ;;
	r) readers=$OPTARG ;;
	c) counters=$OPTARG ;;
	H) hotplug=1 ;;
	q) quiet=1 ;;
	*) sed -n 's/^# \{0,1\}//; 15,26p' "$0" >&2; exit 2 ;;
	esac
done
case $apf in
on) name=guest-apf-postcopy; extra= ;;
off) name=guest-apf-postcopy-off; extra=no-kvmapf ;;
*) echo "error: -a on or -a off, not $apf" >&2; exit 2 ;;
esac
extra="$extra$more"
out=${out:-${KVM_SELFTEST_LOGDIR:-./logs}/$name}
mkdir -p "$out" || exit 2
out=$(cd "$out" && pwd)
rm -f "$out"/*.log "$out/checks.tap" "$out/result" "$out/host-stats" \
	"$out/host-stats-dump" "$out/host-stats-src"

if [ -z "$VMM_ROOT" ] || [ ! -x "$VMM_ROOT/usr/bin/qemu-system-aarch64" ]; then
	echo "SKIP: no arm64 QEMU root (VMM_ROOT=$VMM_ROOT)"
	exit 4
fi
root=$VMM_ROOT
# shellcheck source-path=SCRIPTDIR source=l1-vmm.sh
. "$here/l1-vmm.sh"
vmm_mount "$root" "$here" "$out" || exit 1

# shellcheck source-path=SCRIPTDIR source=apf-l1.sh
. "$here/apf-l1.sh"

start=$(date +%s)
l2_qemu dst 64 -incoming unix:/tmp/mig.sock
dst=$!
l2_qemu src 64
src=$!

ready=0
wait_for "$out/console-src.log" 'apf-work: ready' $((tmo - 120)) && ready=1
r0=$(date +%s)
took_ready=$(( r0 - start ))
if [ $ready = 1 ]; then
	hmp dst "migrate_set_capability postcopy-ram on"
	hmp dst "migrate_set_capability postcopy-blocktime on"
	hmp src "migrate_set_capability postcopy-ram on"
	# Little copied before the switch, and the rest in the background
	# slowly enough that the guest's reads outrun it for a while.
	hmp src "migrate_set_parameter max-bandwidth 8M"
	hmp src "migrate_set_parameter max-postcopy-bandwidth 16M"
	hmp src "migrate -d unix:/tmp/mig.sock"
	sleep 1
	hmp src "migrate_start_postcopy"
	t_switch=$(date +%s)
	# apf-work's seconds count from its ready line, which L1 saw up to
	# a second late: the switch in those seconds, for a quiet run.
	switch_at=$(( t_switch - r0 ))
fi

# The counters while the destination runs: it exits when the guest
# powers off, and takes its VM's counters with it.
done_src=0
while [ $ready = 1 ] && kill -0 $dst 2>/dev/null; do
	kvm_apf_stats dst >"$out/host-stats.tmp"
	grep -q '^dst_' "$out/host-stats.tmp" &&
		mv "$out/host-stats.tmp" "$out/host-stats"
	sample_at_dump dst "$out/console-dst.log"
	if [ $done_src = 0 ]; then
		hmp src "info migrate"
		if grep -q 'Migration status: completed' "$out/monitor-src.log"; then
			# The source's counters, final now that it stopped.
			kvm_apf_stats src >"$out/host-stats-src"
			hmp src quit
			done_src=1
		elif grep -q 'Migration status: failed' "$out/monitor-src.log"; then
			hmp src quit
			break
		fi
	fi
	hmp dst "info migrate"
	sleep 2
done
kill -9 $src $dst 2>/dev/null
wait
took=$(( $(date +%s) - start ))
vmm_umount "$root"

# "Postcopy Blocktime (ms): N", "Postcopy vCPU Blocktime: [a, b]"
btime=$(tr -d '\r' <"$out/monitor-dst.log" |
	sed -n 's/.*[Pp]ostcopy [Bb]locktime[^:]*: *\([0-9][0-9]*\).*/\1/p' |
	tail -n 1)
vbtime=$(tr -d '\r' <"$out/monitor-dst.log" |
	sed -n 's/.*[Pp]ostcopy [Vv][Cc][Pp][Uu] [Bb]locktime[^:]*: *\(.*\)/\1/p' |
	tail -n 1 | tr -d '[] ')
{
	echo "apf $apf"
	apf_figures "$out/console-dst.log" "$out/host-stats" dst \
		"$out/host-stats-src" src
	echo "postcopy_blocktime_ms ${btime:--}"
	echo "postcopy_vcpu_blocktime_ms ${vbtime:--}"
	echo "switch_at ${switch_at:--}"
} >"$out/result"

{
	[ $ready = 1 ]; check workload-started $? \
		"apf-work ready on the source after ${took_ready}s"
	grep -q 'Migration status: completed' "$out/monitor-src.log"
	check migrated $? "$(grep 'Migration status' "$out/monitor-src.log" | tail -n 1 | tr -d '\r'); postcopy from ${t_switch:+$((t_switch - start))}s"
	apf_checks "$apf"
	[ $powered_off = 0 ]
	check poweroff $? "the guest powered off after ${took}s; blocktime ${btime:--} ms, vCPUs ${vbtime:--} ms"
} >"$out/checks.tap"
cat "$out/checks.tap"
[ $failed -eq 0 ]
