# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=sh disable=SC2154,SC2034 # callers set root, out...; read powered_off
# Sourced by apf-postcopy.sh and apf-swap.sh, on the L1 side: what the
# two async PF end-to-end scenarios share.  They set $root (the QEMU
# chroot, mounted with vmm_mount), $out (the output directory), $tmo
# (seconds before QEMU is killed), $secs, $readers, $counters, $hotplug
# and $extra (more guest command line) before calling l2_qemu.

# l2_qemu NAME MiB [QEMU ARGS...]: the series' kernel as the L2 guest
# under the chroot's QEMU, in the background, running apf-work on a MiB
# array (tests/guest-init.sh, apf.work=).  Its console goes to
# $out/console-NAME.log, QEMU's own output to $out/qemu-NAME.log; HMP
# commands go in through $root/tmp/NAME.in (see hmp) and their answers
# to $out/monitor-NAME.log.
l2_qemu() {
	side=$1
	mib=$2
	shift 2
	mkfifo "$root/tmp/$side.in" "$root/tmp/$side.out" || return 1
	cat "$root/tmp/$side.out" >"$out/monitor-$side.log" &
	timeout -s KILL "$tmo" chroot "$root" /usr/bin/qemu-system-aarch64 \
		-M virt,gic-version=3 -accel kvm -cpu host -smp "${vcpus:-2}" -m 512M \
		-name "$side,debug-threads=on" \
		-nodefaults -nic none -display none -serial none -no-reboot \
		-kernel /guest/Image -initrd /guest/initramfs.cpio \
		-append "console=hvc0 quiet nowatchdog panic=-1 rdinit=/init apf.work=$mib,$secs,$readers,$counters,$hotplug,${quiet:-0} $extra" \
		-device virtio-serial-device -device virtconsole,chardev=con \
		-chardev file,id=con,path="/out/console-$side.log" \
		-monitor pipe:/tmp/"$side" "$@" \
		>"$out/qemu-$side.log" 2>&1 </dev/null &
}

# hmp NAME COMMAND: a monitor command; never blocks on a QEMU that is
# gone.
hmp() {
	# shellcheck disable=SC2016 # expanded by the inner shell
	timeout 5 sh -c 'echo "$1" >"$2"' hmp "$2" "$root/tmp/$1.in"
}

# wait_for FILE REGEX SECONDS: until a line of FILE matches, or SECONDS
# pass (status 1).
wait_for() {
	n=0
	while ! grep -q "$2" "$1" 2>/dev/null; do
		[ $n -ge "$3" ] && return 1
		sleep 1
		n=$((n + 1))
	done
}

# vm_of DIR NAME: whether KVM's debugfs DIR (<pid>-<fd>) is the VM of
# l2_qemu NAME; sets pid to its QEMU's.
vm_of() {
	[ -d "$1" ] || return 1
	pid=${1##*/}
	pid=${pid%%-*}
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "console-$2\.log"
}

# cpu_samples NAME: until the QEMU of l2_qemu NAME is gone, once a
# second, a line of L1's uptime, the ticks (USER_HZ) L1's CPUs were busy
# and all their ticks (/proc/stat), and the ticks QEMU's vCPU threads
# ran ("CPU n/KVM", named by l2_qemu's debug-threads; "-" if none is):
# where L1's CPU time went while the guest worked.  Builtins only, bar
# sleep: a fork costs L1 CPU that the vCPUs would otherwise get.
cpu_samples() {
	pid=
	for d in /sys/kernel/debug/kvm/*-*; do
		vm_of "$d" "$1" && break
		pid=
	done
	[ -n "$pid" ] || return 0
	while [ -d "/proc/$pid/task" ]; do
		read -r up _ </proc/uptime
		read -r _ us ni sy id wa hi si st _ </proc/stat
		v=0
		n=0
		for t in /proc/"$pid"/task/*; do
			read -r c 2>/dev/null <"$t/comm" || continue
			case $c in
			CPU\ */KVM) ;;
			*) continue ;;
			esac
			read -r l 2>/dev/null <"$t/stat" || continue
			# fields after "(comm) ": utime and stime are 12 and 13
			# shellcheck disable=SC2086 # split on purpose
			set -- ${l##*") "}
			v=$((v + ${12} + ${13}))
			n=$((n + 1))
		done
		[ $n -gt 0 ] || v=-
		busy=$((us + ni + sy + hi + si + st))
		echo "$up $busy $((busy + id + wa)) $v"
		sleep 1
	done
}

# kvm_apf_stats NAME: KVM's async PF counters of the VM of l2_qemu NAME
# (debugfs <pid>-<fd>/, the same values as the binary stats), as
# "NAME_<stat> <value>" lines; nothing once the VM is gone.
kvm_apf_stats() {
	for d in /sys/kernel/debug/kvm/*-*; do
		vm_of "$d" "$1" || continue
		for s in apf_not_present apf_ready apf_cancelled \
			 apf_ready_dropped apf_sync_inflight apf_sync_slots \
			 apf_sync_sdei apf_sync_irq apf_sync_kernel; do
			echo "${1}_$s $(cat "$d/$s" 2>/dev/null || echo -)"
		done
	done
}

# sample_at_dump NAME CONSOLE: KVM's counters of the VM of l2_qemu NAME
# into $out/host-stats-dump, once, while the guest waits between its two
# dumps of its own counters ("guest: counters end", then the
# "guest-apf-later:" lines, 6 s apart).  Call it at least every 3 s.
sample_at_dump() {
	[ -s "$out/host-stats-dump" ] && return 0
	grep -q '^guest: counters end' "$2" 2>/dev/null || return 0
	grep -q '^guest-apf-later:' "$2" && return 0
	kvm_apf_stats "$1" >"$out/host-stats-dump.tmp"
	grep -q "^${1}_" "$out/host-stats-dump.tmp" &&
		mv "$out/host-stats-dump.tmp" "$out/host-stats-dump"
}

# apf_figures CONSOLE STATS PREFIX: what apf-work and the guest printed
# on CONSOLE (its result line, "guest-apf:" counters) and KVM's counters
# (kvm_apf_stats PREFIX lines in the file STATS), as "name value" lines
# for $out/result.  Sets touched, counted, bad, g_np, g_ready, g_all,
# g_unread, g_parked, g_early, g_unparked, g_killed, g_offline, g_flips,
# g_ends, h_np, h_ready and h_cancel.
apf_figures() {
	tr -d '\r' <"$1" >"$out/console.txt" 2>/dev/null
	field() {
		sed -n "s/.*apf-work: result.* $1 \([0-9]*\).*/\1/p" \
			"$out/console.txt" | head -n 1
	}
	gstat() {
		sed -n "s/^guest-apf${2:-}: $1 \([0-9]*\)/\1/p" \
			"$out/console.txt" | head -n 1
	}
	gnum() {
		v=$(gstat "$@")
		echo "${v:-0}"
	}
	# hstat FILE PREFIX STAT: one of KVM's counters, 0 if none.
	hstat() {
		v=$(sed -n "s/^${2}_$3 \([0-9]*\)$/\1/p" "$1" 2>/dev/null |
			head -n 1)
		echo "${v:-0}"
	}
	touched=$(field touched)
	counted=$(field counted)
	bad=$(field bad)
	g_np=$(gstat not_present)
	g_ready=$(gstat ready)
	g_all=$(gstat wake_all)
	g_unread=$(gstat ready_unread)
	g_parked=$(gstat parked)
	g_early=$(gstat woken_early)
	g_unparked=$(gstat unparked)
	g_killed=$(gstat killed)
	# Every not-present the guest took ends one way, at each dump:
	# "N=P+E+U+K" (not_present, parked, woken_early, unparked, killed).
	g_ends=
	for d in "" -later; do
		g_ends="$g_ends${g_ends:+ }$(gnum not_present $d)=$(gnum parked $d)+$(gnum woken_early $d)+$(gnum unparked $d)+$(gnum killed $d)"
	done
	g_offline=$(gstat woken_offline)
	g_flips=$(gstat cpu1_offline_online)
	h_np=$(sed -n "s/^${3}_apf_not_present \([0-9-]*\)/\1/p" "$2" 2>/dev/null)
	h_ready=$(sed -n "s/^${3}_apf_ready \([0-9-]*\)/\1/p" "$2" 2>/dev/null)
	h_cancel=$(sed -n "s/^${3}_apf_cancelled \([0-9-]*\)/\1/p" "$2" 2>/dev/null)
	# The sandwich the async-pf check uses: the guest's counters at
	# its two dumps around KVM's, which add the migration source's
	# ($4, prefix $5) when there is one.
	g_sum1=; g_sum2=; h_sum=
	d=$out/host-stats-dump
	if [ -s "$d" ]; then
		g_sum1="$(gnum not_present) $(($(gnum ready) + $(gnum wake_all) + $(gnum ready_unread)))"
		g_sum2="$(gnum not_present -later) $(($(gnum ready -later) + $(gnum wake_all -later) + $(gnum ready_unread -later)))"
		h1=$(($(hstat "$d" "$3" apf_not_present) - $(hstat "$d" "$3" apf_cancelled)))
		h2=$(hstat "$d" "$3" apf_ready)
		if [ -n "${4:-}" ]; then
			h1=$((h1 + $(hstat "$4" "$5" apf_not_present) - $(hstat "$4" "$5" apf_cancelled)))
			h2=$((h2 + $(hstat "$4" "$5" apf_ready)))
		fi
		h_sum="$h1 $h2"
	fi
	grep -q '^guest: dmesg ends' "$out/console.txt"
	powered_off=$?
	rm -f "$out/console.txt"
	echo "seconds $secs"
	echo "touched ${touched:--}"
	echo "counted ${counted:--}"
	echo "bad ${bad:--}"
	echo "guest_not_present ${g_np:--}"
	echo "guest_ready ${g_ready:--}"
	echo "guest_wake_all ${g_all:--}"
	echo "guest_ready_unread ${g_unread:--}"
	echo "guest_parked ${g_parked:--}"
	echo "guest_woken_early ${g_early:--}"
	echo "guest_unparked ${g_unparked:--}"
	echo "guest_killed ${g_killed:--}"
	echo "guest_woken_offline ${g_offline:--}"
	echo "guest_cpu1_offline_online ${g_flips:--}"
	echo "host_not_present ${h_np:--}"
	echo "host_ready ${h_ready:--}"
	echo "host_cancelled ${h_cancel:--}"
}

n=0
failed=0
# check NAME STATUS COMMENT: one TAP line.
check() {
	n=$((n + 1))
	if [ "$2" = 0 ]; then
		echo "ok $n $1 # $3"
	else
		echo "not ok $n $1 # $3"
		failed=$((failed + 1))
	fi
}

# apf_checks APF: the checks both scenarios make once apf_figures ran:
# data, async-pf (APF on) or async-pf-off, cpu-hotplug with $hotplug 1.
apf_checks() {
	[ -n "$bad" ] && [ "$bad" = 0 ]
	check data $? "every word of every page right: bad ${bad:-none} of ${touched:-?} pages read and the final sweep"
	if [ "$1" = on ]; then
		# not-present received, and page-ready received or left
		# unread, at the guest's first dump <= KVM's not-present less
		# cancelled, and page-ready raised, read between the dumps
		# <= the guest's at its second dump.
		sandwich() {
			[ -n "$h_sum" ] || return 1
			# shellcheck disable=SC2086 # six numbers
			set -- $g_sum1 $h_sum $g_sum2
			[ "$1" -le "$3" ] && [ "$3" -le "$5" ] &&
				[ "$2" -le "$4" ] && [ "$4" -le "$6" ]
		}
		# Each dump: not_present = parked + woken_early + unparked
		# + killed, no event left without its end.
		ends_add_up() {
			for e in $g_ends; do
				[ "${e%%=*}" = "$((${e#*=}))" ] || return 1
			done
		}
		[ -n "$g_np" ] && [ "$g_np" -gt 0 ] &&
			[ "${g_parked:-0}" -gt 0 ] && sandwich && ends_add_up
		check async-pf $? "guest: not_present ${g_np:--}, ready ${g_ready:--}, wake_all ${g_all:--}, ready_unread ${g_unread:--}, parked ${g_parked:--}; not-present and page-ready: guest ${g_sum1:-?} <= KVM ${h_sum:-none between the dumps} <= guest 6 s later ${g_sum2:-?}; each not-present's end, N=parked+woken_early+unparked+killed at both dumps: ${g_ends:-none}"
	else
		[ "$g_np" = "" ] && [ "$h_np" = 0 ]
		check async-pf-off $? "no-kvmapf: guest counters ${g_np:-none}, KVM: apf_not_present ${h_np:--}"
	fi
	if [ "$hotplug" = 1 ]; then
		[ "${g_flips:-0}" -gt 0 ] && [ -n "$bad" ]
		check cpu-hotplug $? "cpu1 offline and back ${g_flips:-0} times during the run, ${g_offline:--} parked tasks woken by it; every task finished"
	fi
}
