#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Start a Linux guest (the Image and initramfs beside this script) under
# stock QEMU with KVM, 2 vCPUs, and collect the checks it runs
# (guest-init.sh) in TAP form.
#
# usage: run-guest.sh [-a ARGS] [-o OUTDIR] [-t TIMEOUT]
#   -a ARGS     appended to the guest's kernel command line (repeatable)
#   -o OUTDIR   where the guest's files go (default
#               $KVM_SELFTEST_LOGDIR/guest, else ./logs/guest):
#               console.log (the guest's whole console), qemu-cmdline,
#               qemu.log (QEMU's own output), checks.tap
#   -t TIMEOUT  seconds before the guest is killed (default 600)
#
# QEMU: with VMM_ROOT set (the harness's L1 host) it is the Debian arm64
# qemu-system-aarch64 under $VMM_ROOT, run chrooted there; otherwise the
# one on PATH.  checks.tap has one line per guest check and a last one,
# "poweroff", for the guest powering off by itself.  Exit 0 when every
# line passed, 1 otherwise, 4 (skip) when no QEMU can be found.

here=$(cd "$(dirname "$0")" && pwd)
out=${KVM_SELFTEST_LOGDIR:-./logs}/guest
tmo=600
extra=
while getopts "a:o:t:h" opt; do
	case $opt in
	a) extra="$extra $OPTARG" ;;
	o) out=$OPTARG ;;
	t) tmo=$OPTARG ;;
	*) sed -n 's/^# \{0,1\}//; 6,14p' "$0" >&2; exit 2 ;;
	esac
done
mkdir -p "$out" || exit 2
out=$(cd "$out" && pwd)
checks=$(sed -n 's/^CHECKS="\(.*\)"$/\1/p' "$here/guest-init.sh")
for f in Image initramfs.cpio; do
	[ -r "$here/$f" ] || { echo "error: $here/$f is missing" >&2; exit 2; }
done

if [ -n "$VMM_ROOT" ]; then
	if [ ! -x "$VMM_ROOT/usr/bin/qemu-system-aarch64" ]; then
		echo "error: VMM_ROOT=$VMM_ROOT has no usr/bin/qemu-system-aarch64" >&2
		exit 1
	fi
	root=$VMM_ROOT
	# shellcheck source-path=SCRIPTDIR source=l1-vmm.sh
	. "$here/l1-vmm.sh"
	vmm_mount "$root" "$here" "$out" || exit 1
	run="chroot $root"
	qemu=/usr/bin/qemu-system-aarch64
	gdir=/guest
	odir=/out
elif command -v qemu-system-aarch64 >/dev/null 2>&1; then
	run=
	qemu=qemu-system-aarch64
	gdir=$here
	odir=$out
else
	echo "SKIP: no qemu-system-aarch64 (install qemu-system-arm)"
	exit 4
fi

# Only what the guest uses: no default devices or NIC (the NIC's option
# ROM is not in the arm64 root), a virtio console into a file, and a
# quiet, watchdog-free boot: under TCG the L2 guest is slow enough for
# the soft-lockup watchdog to fire during boot, which is emulation speed,
# not a bug.
set -- -M virt,gic-version=3 -accel kvm -cpu host -smp 2 -m 512M \
	-nodefaults -nic none -display none -serial none -monitor none \
	-no-reboot \
	-kernel "$gdir/Image" -initrd "$gdir/initramfs.cpio" \
	-append "console=hvc0 quiet nowatchdog panic=-1 rdinit=/init$extra" \
	-device virtio-serial-device -device virtconsole,chardev=con \
	-chardev file,id=con,path="$odir/console.log"
echo "qemu-system-aarch64 $*" >"$out/qemu-cmdline"
rm -f "$out/console.log" "$out/checks.tap"
start=$(date +%s)
# shellcheck disable=SC2086 # $run is a command prefix or empty
timeout -s KILL "$tmo" $run $qemu "$@" \
	>"$out/qemu.log" 2>&1 </dev/null
rc=$?
took=$(( $(date +%s) - start ))
[ -n "$VMM_ROOT" ] && vmm_umount "$root"

tr -d '\r' <"$out/console.log" 2>/dev/null >"$out/console.txt"
n=0
failed=0
{
	for c in $checks; do
		n=$((n + 1))
		line=$(grep -E "^(not )?ok [0-9]+ $c( |\$)" "$out/console.txt" |
		       head -n 1)
		if [ -z "$line" ]; then
			why="no result from the guest"
			[ $rc -ne 0 ] && why="$why (QEMU exit $rc after ${took}s)"
			echo "not ok $n $c # $why; console log: $out/console.log"
			failed=$((failed + 1))
			continue
		fi
		case $line in not*) failed=$((failed + 1)) ;; esac
		echo "$line" | sed "s/^\(\(not \)\{0,1\}ok\) [0-9]*/\1 $n/"
	done
	n=$((n + 1))
	if [ $rc -eq 0 ] && grep -q '^guest: dmesg ends' "$out/console.txt"; then
		echo "ok $n poweroff # QEMU exited 0 after ${took}s"
	elif [ $rc -eq 137 ] || [ $rc -eq 124 ]; then
		echo "not ok $n poweroff # guest killed after ${tmo}s (timeout);" \
		     "console log: $out/console.log"
		failed=$((failed + 1))
	else
		echo "not ok $n poweroff # QEMU exit $rc after ${took}s:" \
		     "$(tail -n 3 "$out/qemu.log" | tr '\n' ' ' | cut -c1-160)"
		failed=$((failed + 1))
	fi
} >"$out/checks.tap"
rm -f "$out/console.txt"
cat "$out/checks.tap"
[ $failed -eq 0 ]
