#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Run the series' KVM selftest list on an arm64 KVM host and report in
# kselftest's TAP form.  Used inside the harness's L1 host and, from the
# package that "make package" writes, on real hardware.
#
# usage: run-kvm-selftests.sh [-o LOGDIR] [-l] [TEST...]
#   -o LOGDIR  keep each test's output in LOGDIR/<test>.log (default ./logs)
#   -l         list the known tests and exit
#   TEST       run only these (default: every test in the list)
#
# Each test runs under its own timeout from kvm-selftests.list.  Exit 0
# skips (KSFT_SKIP, exit 4) are reported as "# SKIP".  Afterwards the
# kernel log is searched for splats (splat-patterns) that appeared during
# the run; any is a failure of the "kernel-log" check.  Exits non-zero if
# anything failed.

here=$(cd "$(dirname "$0")" && pwd)
list=$here/kvm-selftests.list
patterns=$here/splat-patterns
logdir=./logs

usage() {
	sed -n 's/^# \{0,1\}//; 6,14p' "$0" >&2
	exit 2
}

names() {
	grep -v '^[[:space:]]*\(#\|$\)' "$list" | awk '{print $1}'
}

while getopts "o:lh" opt; do
	case $opt in
	o) logdir=$OPTARG ;;
	l) names; exit 0 ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))

[ -r "$list" ] || { echo "error: test list $list not found" >&2; exit 2; }
if [ "$(uname -m)" != aarch64 ]; then
	echo "error: these are arm64 binaries; run on an arm64 KVM host" \
	     "(this machine is $(uname -m))" >&2
	exit 2
fi
if [ ! -e /dev/kvm ]; then
	echo "error: /dev/kvm not found: boot a kernel with KVM (CONFIG_KVM=y)" \
	     "at EL2 on an arm64 host" >&2
	exit 2
fi

# Validate the requested names before running anything.
if [ $# -gt 0 ]; then
	for t in "$@"; do
		if ! names | grep -qxF "$t"; then
			echo "error: unknown test '$t'; known tests:" >&2
			names | sed 's/^/  /' >&2
			exit 2
		fi
	done
	selected="$*"
else
	selected=$(names)
fi

mkdir -p "$logdir" || exit 2
logdir=$(cd "$logdir" && pwd)
# Tests that keep files of their own (run-guest.sh) put them under here.
export KVM_SELFTEST_LOGDIR="$logdir"
pats=$logdir/.splat-patterns
grep -v '^#' "$patterns" | grep . >"$pats" || exit 2
# shellcheck disable=SC2086 # word count of a list of names
count=$(echo $selected | wc -w)

# Leaks, with kmemleak in the kernel (the debug flavour): what the kernel
# leaked before the tests is reported and set aside now, what they leak
# is reported by a scan after the last one, as "kmemleak: N new
# suspected memory leaks" in the kernel log (tests/splat-patterns; the
# kernel-log check fails on it), in full in $logdir/kmemleak.txt.
# kmemleak reports objects at least 5 s old only, hence the waits.
# The series' features that a host offers only on request (kvm-arm.sdei,
# kvm-arm.async_pf): turned off around a test, for the VMs it creates, and
# back to what they were.  A kernel without them has no such files.
optins_dir=/sys/module/kvm-arm/parameters
optins_saved=
optins_set() {
	optins_saved=
	for p in sdei async_pf; do
		[ -w "$optins_dir/$p" ] || continue
		optins_saved="$optins_saved $p=$(cat "$optins_dir/$p")"
		echo "$1" >"$optins_dir/$p"
	done
}
optins_restore() {
	for pv in $optins_saved; do
		echo "${pv#*=}" >"$optins_dir/${pv%%=*}"
	done
}

kml=/sys/kernel/debug/kmemleak
kmemleak_scan() {
	sleep 6
	echo scan >"$kml"
}
if [ -w "$kml" ]; then
	kmemleak_scan
	cat "$kml" >"$logdir/kmemleak-before.txt" 2>/dev/null
	echo clear >"$kml"
fi
splats_before=$(dmesg 2>/dev/null | grep -Ec -f "$pats" 2>/dev/null)

echo "TAP version 13"
echo "1..$((count + 1))"
n=0
failed=0
for t in $selected; do
	n=$((n + 1))
	line=$(grep -v '^[[:space:]]*#' "$list" | awk -v t="$t" '$1 == t')
	tmo=$(echo "$line" | awk '{print $2}')
	cmd=$(echo "$line" | awk '{$1 = ""; $2 = ""; sub(/^ +/, ""); print}')
	# "OPTINS=0 cmd": run cmd with the series' host opt-ins off.
	optins_off=
	case $cmd in
	"OPTINS=0 "*) optins_off=1; cmd=${cmd#OPTINS=0 } ;;
	esac
	bin=${cmd%% *}
	args=${cmd#"$bin"}
	log=$logdir/$(echo "$t" | tr '/' '_').log
	echo "# $t: $cmd (timeout ${tmo}s)"
	if [ ! -x "$here/kvm/$bin" ]; then
		echo "not ok $n $t # binary kvm/$bin was not built"
		failed=$((failed + 1))
		continue
	fi
	[ -n "$optins_off" ] && optins_set 0
	start=$(date +%s)
	# shellcheck disable=SC2086
	(cd "$here/kvm/$(dirname "$bin")" &&
	 exec timeout -s KILL "$tmo" "./$(basename "$bin")" $args) \
		>"$log" 2>&1 </dev/null
	rc=$?
	[ -n "$optins_off" ] && optins_restore
	took=$(( $(date +%s) - start ))
	case $rc in
	0) echo "ok $n $t # ${took}s" ;;
	4) echo "ok $n $t # SKIP $(grep -m1 -i 'skip' "$log" | cut -c1-120)" ;;
	137|124)
		echo "not ok $n $t # TIMEOUT after ${took}s (limit ${tmo}s)"
		failed=$((failed + 1)) ;;
	*)
		echo "not ok $n $t # exit $rc after ${took}s"
		# the log may end without a newline: add one, drop blank lines
		{ tail -n 15 "$log"; echo; } | sed '/^[[:space:]]*$/d; s/^/#   /'
		failed=$((failed + 1)) ;;
	esac
done

if [ -w "$kml" ]; then
	kmemleak_scan
	cat "$kml" >"$logdir/kmemleak.txt" 2>/dev/null
fi

n=$((n + 1))
splats_after=$(dmesg 2>/dev/null | grep -Ec -f "$pats" 2>/dev/null)
if ! dmesg >/dev/null 2>&1; then
	echo "ok $n kernel-log # SKIP dmesg not readable"
elif [ "${splats_after:-0}" -gt "${splats_before:-0}" ]; then
	echo "not ok $n kernel-log # splat in the kernel log:"
	dmesg | grep -E -f "$pats" | tail -n $((splats_after - splats_before)) |
		sed 's/^/#   /'
	failed=$((failed + 1))
else
	echo "ok $n kernel-log"
fi
[ "$failed" -eq 0 ]
