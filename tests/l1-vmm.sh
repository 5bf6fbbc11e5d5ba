# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=sh
# Sourced by run-guest.sh and apf-postcopy.sh, on the L1 side: the
# chroot in which Debian's arm64 QEMU runs ($VMM_ROOT, the harness's
# read-only image).
#
# vmm_mount ROOT GUESTDIR OUTDIR: what QEMU needs under ROOT (/dev,
# /proc, /sys, a tmpfs /tmp), the guest's files on /guest and the
# output directory on /out.  vmm_umount ROOT undoes it.

vmm_mount() {
	mount --bind /dev "$1/dev" &&
	mount -t proc proc "$1/proc" &&
	mount -t sysfs sys "$1/sys" &&
	mount -t tmpfs tmp "$1/tmp" &&
	mount --bind "$2" "$1/guest" &&
	mount --bind "$3" "$1/out"
}

vmm_umount() {
	for m in out guest tmp sys proc dev; do umount "$1/$m"; done
}
