#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# /init of the L2 guest (a Linux guest under stock QEMU/KVM): run the
# guest checks, print them in TAP on the console, print dmesg between
# markers for the host side's splat check, power off.
#
# run-guest.sh reads CHECKS to know which results to expect: each name
# has a function check_<name> (dashes as underscores) that prints a
# detail and returns 0 for a pass.
CHECKS="boot cpus kvm-services cpu-hotplug vtimer sdei-probe sdei-signal-each-cpu sdei-signal-other-cpu sdei-signal-while-disabled apf-enabled"
export PATH=/bin:/sbin

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug

# harness.kcsan=on (make kcsan-test, with kcsan.early_enable=0): KCSAN's
# runtime is switched on here, once the kernel is up, rather than from
# the first instruction, which the emulated L1 does not get through.
case " $(cat /proc/cmdline) " in
*" harness.kcsan=on "*)
	if echo on >/sys/kernel/debug/kcsan; then
		echo "guest: KCSAN on from /init"
	else
		echo "guest: KCSAN could not be switched on"
	fi ;;
esac

check_boot() {
	echo "$(uname -r), /init at $(cut -d' ' -f1 /proc/uptime)s"
}

check_cpus() {
	online=$(cat /sys/devices/system/cpu/online)
	echo "online: $online"
	[ "$online" = 0-1 ]
}

check_kvm_services() {
	line=$(dmesg | grep -m1 'smccc: KVM: hypervisor services detected')
	echo "${line:-no \"KVM: hypervisor services detected\" in dmesg}"
	[ -n "$line" ]
}

cpu1_state() {
	echo "cpu1/online=$(cat /sys/devices/system/cpu/cpu1/online)," \
	     "online=$(cat /sys/devices/system/cpu/online)"
}

# PSCI CPU_OFF when cpu1 goes offline, CPU_ON when it comes back.
check_cpu_hotplug() {
	[ -w /sys/devices/system/cpu/cpu1/online ] || {
		echo "cpu1 cannot be taken offline (no CONFIG_HOTPLUG_CPU?)"
		return 1
	}
	echo 0 >/sys/devices/system/cpu/cpu1/online || return 1
	off=$(cpu1_state)
	echo 1 >/sys/devices/system/cpu/cpu1/online || return 1
	on=$(cpu1_state)
	echo "off: $off; on: $on"
	[ "$off" = "cpu1/online=0, online=0" ] &&
		[ "$on" = "cpu1/online=1, online=0-1" ]
}

timer_irqs() {
	awk '/arch_timer/ { for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) n += $i; else break }
	     END { print n + 0 }' /proc/interrupts
}

# The virtual timer ticks: its interrupt count grows across a sleep, and
# the sleep lasts about as long as asked.
check_vtimer() {
	i0=$(timer_irqs)
	t0=$(cut -d' ' -f1 /proc/uptime)
	sleep 1
	i1=$(timer_irqs)
	t1=$(cut -d' ' -f1 /proc/uptime)
	echo "arch_timer interrupts $i0 -> $i1 over ${t0}s -> ${t1}s"
	[ "$i1" -gt "$i0" ] &&
		awk -v a="$t0" -v b="$t1" 'BEGIN { exit !(b - a >= 0.9) }'
}

# SDEI: the unmodified client found KVM's dispatcher with no firmware
# table (the series' KVM fallback probe, HVC conduit).
check_sdei_probe() {
	line=$(dmesg | grep -m1 -E 'sdei: SDEIv[0-9]+\.[0-9]+ .*detected')
	echo "${line:-no \"sdei: SDEIv... detected\" in dmesg}"
	echo "$line" | grep -q 'SDEIv1\.'
}

# A case of the KUnit suite arm_sdei, which ran at boot: its result line.
kunit_case() {
	line=$(dmesg | grep -m1 -E "(not )?ok [0-9]+ $1( |\$)" |
	       sed 's/^\[[^]]*\] *//')
	echo "${line:-no KUnit result for $1 (suite arm_sdei not built?)}"
	case $line in
	ok*"# SKIP"*) return 1 ;;
	ok*) return 0 ;;
	*) return 1 ;;
	esac
}

# Event 0 signalled on each CPU runs the handler on that CPU.
check_sdei_signal_each_cpu() {
	kunit_case sdei_test_signal_each_cpu
}

# CPU 0 signals CPU 1 (idle: KVM wakes it from WFI for the event).
check_sdei_signal_other_cpu() {
	kunit_case sdei_test_signal_other_cpu
}

# A signal while disabled is refused and never delivered (KVM, as TF-A
# since v2.13), or kept pending and delivered on enable (older firmware).
check_sdei_signal_while_disabled() {
	kunit_case sdei_test_signal_while_disabled
}

# Async PF (series, part apf-guest): the guest found KVM's service and
# enabled it on every CPU (CONFIG_KVM_GUEST, arch/arm64/kernel/kvm.c).
check_apf_enabled() {
	line=$(dmesg | grep -m1 'kvm-guest: async PF')
	f=/sys/kernel/debug/kvm_guest/async_pf
	[ -r $f ] || {
		echo "${line:-no \"kvm-guest: async PF\" in dmesg}; no $f"
		return 1
	}
	cpus=$(awk '$1 == "cpus_enabled" { print $2 }' $f)
	echo "$line; cpus_enabled $cpus"
	[ "$cpus" = "$(nproc)" ]
}

# The async PF workload instead of the checks, when the L1 side asks
# for it (tests/apf-postcopy.sh):
# apf.work=MiB,seconds,readers,counters[,hotplug[,quiet]].  With hotplug
# 1, cpu1 goes offline and online again every 3 s meanwhile, parked
# tasks or not; with quiet 1, apf-work prints its seconds only at the
# end (-q).  The counters go out as "guest-apf: <name> <value>" lines.
run_apf_work() {
	echo "guest: apf-work $1"
	# shellcheck disable=SC2046 # the numbers, as arguments
	set -- $(echo "$1" | tr , ' ')
	q=
	[ "${6:-0}" = 1 ] && q=-q
	apf-work -m "$1" -s "$2" -t "$3" -c "$4" $q &
	work=$!
	flips=0
	if [ "${5:-0}" = 1 ]; then
		while kill -0 $work 2>/dev/null; do
			sleep 2
			echo 0 >/sys/devices/system/cpu/cpu1/online &&
				sleep 1 &&
				echo 1 >/sys/devices/system/cpu/cpu1/online &&
				flips=$((flips + 1))
		done
	fi
	wait $work
	echo "guest: apf-work exit $?"
	echo "guest-apf: cpu1_offline_online $flips"
	f=/sys/kernel/debug/kvm_guest/async_pf
	if [ -r $f ]; then
		sed 's/^/guest-apf: /' $f
		# KVM's counters are read in L1 between this dump and the
		# next (tests/apf-l1.sh): what the guest does meanwhile,
		# or after, cannot make the two sides disagree.
		echo "guest: counters end"
		sleep 6
		sed 's/^/guest-apf-later: /' $f
	else
		echo "guest-apf: none"
	fi
}

# The kexec check instead of the checks (tests/apf-kexec.sh):
# apf.kexec=crash-off or crash-on.  This kernel loads itself for a crash
# from the 9p share "guest" (L1's directory with Image and
# initramfs.cpio), with nr_cpus=1 as kdump does, and no-kvmapf for
# crash-off; it waits 30 s, in which L1 reads KVM's control words, and
# crashes.  The crash kernel (apf.kexec=up) says what it found and
# waits for L1 to stop it.
kexec=$(sed -n 's/.*apf\.kexec=\([a-z-]*\).*/\1/p' /proc/cmdline)
case $kexec in
crash-on|crash-off)
	opt=
	[ "$kexec" = crash-off ] && opt=no-kvmapf
	mkdir -p /mnt
	if ! mount -t 9p -o trans=virtio,version=9p2000.L,ro guest /mnt ||
	   ! kexec-load -p /mnt/Image /mnt/initramfs.cpio \
		"console=hvc0 quiet nowatchdog panic=-1 rdinit=/init nr_cpus=1 reset_devices apf.kexec=up $opt"; then
		echo "guest: kexec-load failed"
		poweroff -f
	fi
	# QEMU refuses to migrate while the share is mounted.
	umount /mnt
	dmesg | grep 'kvm-guest: async PF' | sed 's/^/guest: /'
	echo "guest: crash kernel loaded, online $(cat /sys/devices/system/cpu/online)"
	sleep 30
	echo "guest: dmesg follows"
	dmesg
	echo "guest: dmesg ends"
	echo "guest: crashing"
	echo c >/proc/sysrq-trigger
	;;
up)
	echo "guest: crash kernel up, online $(cat /sys/devices/system/cpu/online)"
	dmesg | grep 'kvm-guest: async PF' | sed 's/^/guest: /'
	echo "guest: dmesg follows"
	dmesg
	echo "guest: dmesg ends"
	echo "guest: crash kernel waits"
	while :; do sleep 60; done
	;;
esac

work=$(sed -n 's/.*apf\.work=\([0-9,]*\).*/\1/p' /proc/cmdline)
if [ -n "$work" ]; then
	run_apf_work "$work"
	echo "guest: dmesg follows"
	dmesg
	echo "guest: dmesg ends"
	sync
	poweroff -f
fi

echo "guest: init reached"
echo "TAP version 13"
# shellcheck disable=SC2086 # a list of names
set -- $CHECKS
echo "1..$#"
n=0
for c in $CHECKS; do
	n=$((n + 1))
	out=$("check_$(echo "$c" | tr - _)" 2>&1)
	rc=$?
	out=$(echo "$out" | tr '\n' ' ' | cut -c1-200)
	if [ $rc -eq 0 ]; then
		echo "ok $n $c # $out"
	else
		echo "not ok $n $c # $out"
	fi
done
echo "guest: dmesg follows"
dmesg
echo "guest: dmesg ends"
sync
poweroff -f
