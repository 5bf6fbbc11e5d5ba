#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Async page faults and a crash kernel, L1 side: the series' kernel as
# an L2 guest under stock QEMU/KVM with async PF on, loads itself as its
# crash kernel (kexec_file_load, nr_cpus=1 as kdump does, no-kvmapf with
# -a off) and crashes (tests/guest-init.sh, apf.kexec=).  A crash
# kernel that does not use the service, or brings up one CPU only, must
# not find it still on, with KVM writing page-ready blocks into the dead
# kernel's memory: KVM's control word of every vCPU, as the VMM sees it,
# must read 0 once the crash kernel is up (with -a on: 0 on every vCPU
# but the crash kernel's CPU 0, which enabled it again).  The VMM's view
# is QEMU's migration stream, saved to a file before the crash (where
# every word must be on: the reading works) and after.
#
# usage: apf-kexec.sh [-a on|off] [-o OUTDIR] [-t TIMEOUT]
#   -a on|off   async PF in the crash kernel (off: no-kvmapf); default off
#   -o OUTDIR   default $KVM_SELFTEST_LOGDIR/guest-apf-kexec[-on]
#   -t TIMEOUT  seconds before QEMU is killed (600)
#
# Results in OUTDIR/checks.tap, one line per check.  The guest's console
# up to the crash and from the crash kernel's /init on is console.log;
# the whole of it, with the panic the check asks for, crash-console.txt.
# QEMU is found as by run-guest.sh (VMM_ROOT).  Exit 0 when every check
# passed, 1 otherwise, 4 (skip) without QEMU.

here=$(cd "$(dirname "$0")" && pwd)
crash=off
tmo=600
out=
while getopts "a:o:t:h" opt; do
	case $opt in
	a) crash=$OPTARG ;;
	o) out=$OPTARG ;;
	t) tmo=$OPTARG ;;
	*) sed -n 's/^# \{0,1\}//; 15,18p' "$0" >&2; exit 2 ;;
	esac
done
case $crash in
off) name=guest-apf-kexec ;;
on) name=guest-apf-kexec-on ;;
*) echo "error: -a on or -a off, not $crash" >&2; exit 2 ;;
esac
out=${out:-${KVM_SELFTEST_LOGDIR:-./logs}/$name}
mkdir -p "$out" || exit 2
out=$(cd "$out" && pwd)
rm -f "$out"/*.log "$out/checks.tap" "$out"/state-* "$out/crash-console.txt"

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

# save_state FILE: QEMU's migration stream of the VM into $out/FILE;
# the VM is paused when it returns 0.
save_state() {
	done0=$(grep -c 'Migration status: completed' "$out/monitor-src.log")
	hmp src "migrate -d exec:cat>/out/$1"
	i=0
	while [ $i -lt 120 ]; do
		sleep 1
		hmp src "info migrate"
		sleep 1
		[ "$(grep -c 'Migration status: completed' "$out/monitor-src.log")" -gt "$done0" ] &&
			return 0
		grep -q 'Migration status: failed' "$out/monitor-src.log" &&
			return 1
		i=$((i + 1))
	done
	return 1
}

# ctrl_words FILE: KVM_REG_ARM_ASYNC_PF_CTRL (0x6030000000141100) of
# each vCPU in the stream $out/FILE, in hex, one line per vCPU.  QEMU
# keeps the registers KVM lists in each CPU's section as a 32-bit count
# N, N 64-bit register ids and their N values, big-endian
# (cpreg_vmstate_* in target/arm/machine.c); the device state, CPUs
# included, comes after the RAM, in the stream's last MiB.  GNU grep
# finds the id; awk reads the count before it and the value after the
# ids (od and awk over the whole MiB took minutes in L1 under TCG).
# The VMM root's programs are named by path: L1's busybox runs its own
# applet for a bare name, even through chroot, and its grep has no -b.
ctrl_words() {
	chroot "$root" /usr/bin/tail -c 1048576 "/out/$1" >"$out/$1.tail" ||
		return
	# GNU cut too: busybox's ends a line at the NULs of the match.
	for off in $(LC_ALL=C chroot "$root" /bin/sh -c "/bin/grep -obUaP \
			'\\x60\\x30\\x00\\x00\\x00\\x14\\x11\\x00' /out/$1.tail |
			/usr/bin/cut -d: -f1"); do
		case $off in '' | *[!0-9]*) continue ;; esac
		from=$((off > 8200 ? off - 8200 : 0))
		chroot "$root" /usr/bin/od -An -v -tx1 -j "$from" -N 24600 "/out/$1.tail" |
		awk -v p=$((off - from)) '
		BEGIN { for (i = 0; i < 16; i++) H[sprintf("%x", i)] = i }
		function byte(q) { return H[substr(b[q], 1, 1)] * 16 + H[substr(b[q], 2, 1)] }
		function hex(q, k, s) { s = ""; for (k = 0; k < 8; k++) s = s b[q + k]; return s }
		{ for (i = 1; i <= NF; i++) b[n++] = $i }
		END {
			for (j = 0; j < 1024; j++) {
				s = p - 8 * j
				if (s < 4)
					break
				c = ((byte(s - 4) * 256 + byte(s - 3)) * 256 + byte(s - 2)) * 256 + byte(s - 1)
				if (c > j && c <= 1024 && s + 16 * c <= n &&
				    b[s] == "60" && b[s + 8 * (c - 1)] == "60") {
					print hex(s + 8 * c + 8 * j)
					break
				}
			}
		}'
	done
	rm -f "$out/$1.tail"
}

# on WORDS: every word has ENABLED (bit 0) set; off WORDS: every one is 0.
words_on() {
	[ -n "$1" ] || return 1
	for w in $1; do
		case $w in *[13579bdf]) ;; *) return 1 ;; esac
	done
}
words_off() {
	[ -n "$1" ] || return 1
	for w in $1; do [ "$w" = 0000000000000000 ] || return 1; done
}

start=$(date +%s)
secs=0 readers=0 counters=0 hotplug=0
extra="apf.kexec=crash-$crash crashkernel=96M"
l2_qemu src 0 \
	-fsdev local,id=gfs,path=/guest,security_model=none,readonly=on \
	-device virtio-9p-device,fsdev=gfs,mount_tag=guest
qemu=$!
con=$out/console-src.log

loaded=0 up=0 before='' after=''
wait_for "$con" '^guest: crash kernel loaded' 300 && loaded=1
t_loaded=$(( $(date +%s) - start ))
if [ $loaded = 1 ] && save_state state-before; then
	before=$(ctrl_words state-before | tr '\n' ' ')
	hmp src cont
fi
if [ $loaded = 1 ]; then
	wait_for "$con" '^guest: crash kernel waits' \
		$((tmo - $(date +%s) + start - 30)) &&
		up=1
	t_up=$(( $(date +%s) - start ))
	[ $up = 1 ] && save_state state-after &&
		after=$(ctrl_words state-after | tr '\n' ' ')
fi
hmp src quit
sleep 2
kill -9 $qemu 2>/dev/null
wait
took=$(( $(date +%s) - start ))
vmm_umount "$root"
rm -f "$out"/state-*

# The deliberate panic stays out of console.log, which is searched for
# splats like every L2 console: the first kernel up to "crashing", the
# crash kernel from its /init on (its dmesg included).
tr -d '\r' <"$con" >"$out/crash-console.txt"
awk '/^guest: crash kernel up/ { on = 1 } on || !off { print }
     /^guest: crashing/ { off = 1 }' "$out/crash-console.txt" \
	>"$out/console.log"
rm -f "$con"

n=0
failed=0
{
	grep -q '^guest: crash kernel loaded, online 0-1' "$out/console.log"
	check crash-kernel-loaded $? "$(grep -m1 '^guest: .*kvm-guest: async PF' "$out/console.log"); $(grep -m1 -e '^guest: crash kernel loaded' -e 'kexec-load' "$out/console.log")"
	# shellcheck disable=SC2086 # two words
	[ "$(echo $before | wc -w)" = 2 ] && words_on "$before"
	check ctrl-before-crash $? "KVM's control word of each vCPU, before the crash: ${before:-not read}"
	if [ "$crash" = off ]; then
		want='async PF: off (no-kvmapf)'
	else
		want='async PF: on'
	fi
	sed -n '/^guest: crash kernel up/,$p' "$out/console.log" >"$out/crash-kernel.txt"
	grep -q '^guest: crash kernel up, online 0$' "$out/crash-kernel.txt" &&
		grep -q "^guest: .*kvm-guest: $want" "$out/crash-kernel.txt"
	check crash-kernel-up $? "$(grep -m1 '^guest: crash kernel up' "$out/crash-kernel.txt"); $(grep -m1 '^guest: .*kvm-guest: async PF' "$out/crash-kernel.txt")"
	# shellcheck disable=SC2086 # two words
	set -- $after
	if [ "$crash" = off ]; then
		[ $# = 2 ] && words_off "$after"
	else
		[ $# = 2 ] && words_on "$1" && words_off "$2"
	fi
	check ctrl-after-crash $? "KVM's control word of each vCPU with the crash kernel up: ${after:-not read} (loaded at ${t_loaded}s, crash kernel up at ${t_up:-?}s, ${took}s in all)"
} >"$out/checks.tap"
rm -f "$out/crash-kernel.txt"
cat "$out/checks.tap"
[ $failed -eq 0 ]
