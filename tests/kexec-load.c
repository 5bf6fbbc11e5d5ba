// SPDX-License-Identifier: GPL-2.0
/*
 * kexec-load: load a kernel for kexec, or for a crash (-p), with
 * kexec_file_load(), in the L2 guest of the async PF kexec check
 * (tests/apf-kexec.sh).  kexec-tools is not in the guest's initramfs;
 * the system call needs nothing else.
 *
 * usage: kexec-load [-p] KERNEL INITRD CMDLINE
 * Exit 0 when the kernel loaded, 1 when the call failed, 2 on bad usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define KEXEC_FILE_ON_CRASH	0x00000002	/* include/uapi/linux/kexec.h */

int main(int argc, char **argv)
{
	unsigned long flags = 0;
	int kfd, ifd;

	if (argc > 1 && !strcmp(argv[1], "-p")) {
		flags |= KEXEC_FILE_ON_CRASH;
		argv++;
		argc--;
	}
	if (argc != 4) {
		fprintf(stderr, "usage: kexec-load [-p] KERNEL INITRD CMDLINE\n");
		return 2;
	}
	kfd = open(argv[1], O_RDONLY);
	if (kfd < 0) {
		fprintf(stderr, "kexec-load: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	ifd = open(argv[2], O_RDONLY);
	if (ifd < 0) {
		fprintf(stderr, "kexec-load: %s: %s\n", argv[2], strerror(errno));
		return 1;
	}
	if (syscall(SYS_kexec_file_load, kfd, ifd, strlen(argv[3]) + 1,
		    argv[3], flags)) {
		fprintf(stderr, "kexec-load: kexec_file_load: %s\n",
			strerror(errno));
		return 1;
	}
	printf("kexec-load: %s loaded%s\n", argv[1],
	       flags & KEXEC_FILE_ON_CRASH ? " for a crash" : "");
	return 0;
}
