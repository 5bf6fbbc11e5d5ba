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
#                        [-r READERS] [-c COUNTERS] [-H]
#   -a on|off   async PF in the guest (off: no-kvmapf); default on
#   -o OUTDIR   default $KVM_SELFTEST_LOGDIR/guest-apf-postcopy[-off]
#   -s SECONDS  how long apf-work runs after the guest is ready (30)
#   -t TIMEOUT  seconds before both QEMUs are killed (900)
#   -r READERS, -c COUNTERS  apf-work's tasks (2 and 2)
#   -H          the guest takes cpu1 offline and back every 3 s meanwhile
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
out=
while getopts "a:o:s:t:r:c:Hh" opt; do
	case $opt in
	a) apf=$OPTARG ;;
	o) out=$OPTARG ;;
	s) secs=$OPTARG ;;
	t) tmo=$OPTARG ;;
	r) readers=$OPTARG ;;
	c) counters=$OPTARG ;;
	H) hotplug=1 ;;
	*) sed -n 's/^# \{0,1\}//; 15,22p' "$0" >&2; exit 2 ;;
	esac
done
case $apf in
on) name=guest-apf-postcopy; extra= ;;
off) name=guest-apf-postcopy-off; extra=no-kvmapf ;;
*) echo "error: -a on or -a off, not $apf" >&2; exit 2 ;;
esac
out=${out:-${KVM_SELFTEST_LOGDIR:-./logs}/$name}
mkdir -p "$out" || exit 2
out=$(cd "$out" && pwd)
rm -f "$out"/*.log "$out/checks.tap" "$out/result"

if [ -z "$VMM_ROOT" ] || [ ! -x "$VMM_ROOT/usr/bin/qemu-system-aarch64" ]; then
	echo "SKIP: no arm64 QEMU root (VMM_ROOT=$VMM_ROOT)"
	exit 4
fi
root=$VMM_ROOT
# shellcheck source-path=SCRIPTDIR source=l1-vmm.sh
. "$here/l1-vmm.sh"
vmm_mount "$root" "$here" "$out" || exit 1

# Both ends alike but for the console file, the monitor, -incoming.
qemu() {
	side=$1
	shift
	mkfifo "$root/tmp/$side.in" "$root/tmp/$side.out" || return 1
	cat "$root/tmp/$side.out" >"$out/monitor-$side.log" &
	timeout -s KILL "$tmo" chroot "$root" /usr/bin/qemu-system-aarch64 \
		-M virt,gic-version=3 -accel kvm -cpu host -smp 2 -m 512M \
		-nodefaults -nic none -display none -serial none -no-reboot \
		-kernel /guest/Image -initrd /guest/initramfs.cpio \
		-append "console=hvc0 quiet nowatchdog panic=-1 rdinit=/init apf.work=64,$secs,$readers,$counters,$hotplug $extra" \
		-device virtio-serial-device -device virtconsole,chardev=con \
		-chardev file,id=con,path="/out/console-$side.log" \
		-monitor pipe:/tmp/"$side" "$@" \
		>"$out/qemu-$side.log" 2>&1 </dev/null &
}

# A monitor command; never blocks on a QEMU that is gone.
hmp() {
	# shellcheck disable=SC2016 # expanded by the inner shell
	timeout 5 sh -c 'echo "$1" >"$2"' hmp "$2" "$root/tmp/$1.in"
}

# Until a line matching $2 is in file $1, or $3 seconds pass.
wait_for() {
	n=0
	while ! grep -q "$2" "$1" 2>/dev/null; do
		[ $n -ge "$3" ] && return 1
		sleep 1
		n=$((n + 1))
	done
}

# KVM's async PF counters of each VM (debugfs, <pid>-<fd>/), as
# "<side>_<stat> <value>": dst is the QEMU started with -incoming.
host_stats() {
	for d in /sys/kernel/debug/kvm/*-*; do
		[ -d "$d" ] || continue
		pid=${d##*/}
		pid=${pid%%-*}
		side=src
		grep -q incoming "/proc/$pid/cmdline" 2>/dev/null && side=dst
		for s in apf_not_present apf_ready apf_cancelled \
			 apf_ready_dropped apf_sync_inflight apf_sync_slots \
			 apf_sync_sdei apf_sync_irq apf_sync_kernel; do
			echo "${side}_$s $(cat "$d/$s" 2>/dev/null || echo -)"
		done
	done
}

start=$(date +%s)
qemu dst -incoming unix:/tmp/mig.sock
dst=$!
qemu src
src=$!

ready=0
wait_for "$out/console-src.log" 'apf-work: ready' $((tmo - 120)) && ready=1
took_ready=$(( $(date +%s) - start ))
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
fi

# The counters while the destination runs: it exits when the guest
# powers off, and takes its VM's counters with it.
done_src=0
while [ $ready = 1 ] && kill -0 $dst 2>/dev/null; do
	host_stats >"$out/host-stats.tmp"
	grep -q '^dst_' "$out/host-stats.tmp" &&
		mv "$out/host-stats.tmp" "$out/host-stats"
	if [ $done_src = 0 ]; then
		hmp src "info migrate"
		if grep -q 'Migration status: completed' "$out/monitor-src.log"; then
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

con="$out/console-dst.log"
tr -d '\r' <"$con" >"$out/console.txt" 2>/dev/null
field() {
	sed -n "s/.*apf-work: result.* $1 \([0-9]*\).*/\1/p" "$out/console.txt" | head -n 1
}
gstat() {
	sed -n "s/^guest-apf: $1 \([0-9]*\)/\1/p" "$out/console.txt" | head -n 1
}
hstat() {
	sed -n "s/^dst_$1 \([0-9-]*\)/\1/p" "$out/host-stats" 2>/dev/null
}
touched=$(field touched)
counted=$(field counted)
bad=$(field bad)
g_np=$(gstat not_present)
g_ready=$(gstat ready)
g_all=$(gstat wake_all)
g_parked=$(gstat parked)
g_offline=$(gstat woken_offline)
g_flips=$(gstat cpu1_offline_online)
h_np=$(hstat apf_not_present)
h_ready=$(hstat apf_ready)
h_cancel=$(hstat apf_cancelled)
# "Postcopy Blocktime (ms): N", "Postcopy vCPU Blocktime: [a, b]"
btime=$(tr -d '\r' <"$out/monitor-dst.log" |
	sed -n 's/.*[Pp]ostcopy [Bb]locktime[^:]*: *\([0-9][0-9]*\).*/\1/p' |
	tail -n 1)
vbtime=$(tr -d '\r' <"$out/monitor-dst.log" |
	sed -n 's/.*[Pp]ostcopy [Vv][Cc][Pp][Uu] [Bb]locktime[^:]*: *\(.*\)/\1/p' |
	tail -n 1 | tr -d '[] ')
{
	echo "apf $apf"
	echo "seconds $secs"
	echo "touched ${touched:--}"
	echo "counted ${counted:--}"
	echo "bad ${bad:--}"
	echo "guest_not_present ${g_np:--}"
	echo "guest_ready ${g_ready:--}"
	echo "guest_wake_all ${g_all:--}"
	echo "guest_parked ${g_parked:--}"
	echo "guest_woken_offline ${g_offline:--}"
	echo "guest_cpu1_offline_online ${g_flips:--}"
	echo "host_not_present ${h_np:--}"
	echo "host_ready ${h_ready:--}"
	echo "host_cancelled ${h_cancel:--}"
	echo "postcopy_blocktime_ms ${btime:--}"
	echo "postcopy_vcpu_blocktime_ms ${vbtime:--}"
} >"$out/result"

n=0
failed=0
check() {
	n=$((n + 1))
	if [ "$2" = 0 ]; then
		echo "ok $n $1 # $3"
	else
		echo "not ok $n $1 # $3"
		failed=$((failed + 1))
	fi
}
{
	[ $ready = 1 ]; check workload-started $? \
		"apf-work ready on the source after ${took_ready}s"
	grep -q 'Migration status: completed' "$out/monitor-src.log"
	check migrated $? "$(grep 'Migration status' "$out/monitor-src.log" | tail -n 1 | tr -d '\r'); postcopy from ${t_switch:+$((t_switch - start))}s"
	[ -n "$bad" ] && [ "$bad" = 0 ]
	check data $? "every word of every page right after the switch: bad ${bad:-none} of ${touched:-?} pages read and the final sweep"
	if [ "$apf" = on ]; then
		[ -n "$g_np" ] && [ "$g_np" -gt 0 ] &&
			[ "${g_parked:-0}" -gt 0 ] &&
			[ "$g_np" = $((h_np - h_cancel)) ] &&
			[ $((g_ready + g_all)) = "$h_ready" ]
		check async-pf $? "guest: not_present ${g_np:--}, ready ${g_ready:--}, wake_all ${g_all:--}, parked ${g_parked:--}; KVM on the destination: apf_not_present ${h_np:--} (cancelled ${h_cancel:--}), apf_ready ${h_ready:--}"
	else
		[ "$g_np" = "" ] && [ "$h_np" = 0 ]
		check async-pf-off $? "no-kvmapf: guest counters ${g_np:-none}, KVM on the destination: apf_not_present ${h_np:--}"
	fi
	if [ $hotplug = 1 ]; then
		[ "${g_flips:-0}" -gt 0 ] && [ -n "$bad" ]
		check cpu-hotplug $? "cpu1 offline and back ${g_flips:-0} times during the run, ${g_offline:--} parked tasks woken by it; every task finished"
	fi
	grep -q '^guest: dmesg ends' "$out/console.txt"
	check poweroff $? "the guest powered off after ${took}s; blocktime ${btime:--} ms, vCPUs ${vbtime:--} ms"
} >"$out/checks.tap"
rm -f "$out/console.txt"
cat "$out/checks.tap"
[ $failed -eq 0 ]
