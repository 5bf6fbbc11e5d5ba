"""The L2 level: stock arm64 QEMU for L1, and the Linux guest it starts.

L1 gets Debian's own arm64 qemu-system-aarch64 (qemu-system-arm:arm64 and
its dependencies, unpacked by mmdebstrap --variant=extract from this
machine's apt sources; nothing arm64 runs here) on a read-only ext4
image, attached as a virtio disk: L1 mounts it and runs QEMU chrooted
there.  The guest kernel, its initramfs and the L1-side script travel in
the test package (tests/run-guest.sh, tests/guest-init.sh).
"""

import os
import subprocess

from . import fresh, vm
from .common import BUILD, CROSS, TOP, Error, Stage, log, run
from .vm import GUEST_INIT

VMM = os.path.join(BUILD, 'vmm')
VMM_ROOT = os.path.join(VMM, 'root')
VMM_IMAGE = os.path.join(VMM, 'vmm.ext4')
# dash, coreutils and grep: QEMU's exec: migration runs /bin/sh, and
# tests/apf-kexec.sh reads the stream it saves with tail, grep and od.
VMM_PACKAGES = ['qemu-system-arm', 'dmsetup', 'dash', 'coreutils', 'grep']
# Mount points QEMU's chroot needs inside L1; the image is read-only.
CHROOT_DIRS = ('dev', 'proc', 'sys', 'tmp', 'guest', 'out')


def vmm_image():
    """build/vmm/vmm.ext4: an arm64 root holding qemu-system-aarch64."""
    stamp = VMM_IMAGE + '.stamp'
    want = ' '.join(VMM_PACKAGES) + '\n'
    if os.path.exists(stamp) and open(stamp).read() == want:
        return VMM_IMAGE
    with Stage('arm64 QEMU for L1 (mmdebstrap extract, ext4 image)'):
        run(['rm', '-rf', '--one-file-system', VMM_ROOT], quiet=True)
        os.makedirs(VMM, exist_ok=True)
        cmd = ['mmdebstrap', '--variant=extract', '--mode=root',
               '--architectures=arm64',
               '--include=' + ','.join(VMM_PACKAGES)]
        cmd += [f'--aptopt={f}' for f in fresh.apt_fetch_options()]
        cmd += [fresh.SUITE, VMM_ROOT] + fresh.apt_sources()
        res = run(cmd, check=False)
        qemu = os.path.join(VMM_ROOT, 'usr/bin/qemu-system-aarch64')
        if res.returncode != 0 or not os.path.exists(qemu):
            raise Error('could not unpack ' + ', '.join(
                f'{p}:arm64' for p in VMM_PACKAGES) + ' with mmdebstrap '
                '(see its output above): the apt sources must carry arm64 '
                'packages for bookworm, e.g. a deb822 source with '
                '"Architectures: amd64 arm64" or none set; check with '
                '"apt-get update && apt-cache policy qemu-system-arm:arm64"')
        for d in CHROOT_DIRS:
            os.makedirs(os.path.join(VMM_ROOT, d), exist_ok=True)
        mb = int(subprocess.run(['du', '-sm', VMM_ROOT], capture_output=True,
                                text=True).stdout.split()[0])
        try:
            os.remove(VMM_IMAGE)
        except FileNotFoundError:
            pass
        run(['mke2fs', '-q', '-t', 'ext4', '-L', 'vmm', '-d', VMM_ROOT,
             VMM_IMAGE, f'{mb * 5 // 4 + 32}M'])
        log(f'arm64 QEMU root: {mb} MB, image '
            f'{os.path.relpath(VMM_IMAGE, TOP)}')
    with open(stamp, 'w') as f:
        f.write(want)
    return VMM_IMAGE


GUEST_APPLETS = (
    'sh', 'mount', 'cat', 'echo', 'dmesg', 'poweroff', 'sync', 'uname',
    'grep', 'awk', 'sed', 'cut', 'tr', 'sleep', 'nproc', 'head', 'tail',
    'wc', 'test', '[', 'true', 'false', 'date', 'ls', 'mkdir', 'seq',
    'expr')


def build_static(name, dest, pthread=False):
    """tests/<name>.c, static arm64, at dest (rebuilt when the source is
    newer); return dest."""
    src = os.path.join(TOP, 'tests', f'{name}.c')
    if os.path.exists(dest) and os.path.getmtime(dest) >= \
            os.path.getmtime(src):
        return dest
    run([f'{CROSS}gcc', '-static', '-O2', '-Wall', '-Werror'] +
        (['-pthread'] if pthread else []) + ['-o', dest, src])
    return dest


def make_guest_initramfs(dest):
    """The guest's initramfs: /init is tests/guest-init.sh, apf-work and
    kexec-load (tests/kexec-load.c, for tests/apf-kexec.sh)."""
    work = build_static('apf-work', os.path.join(BUILD, 'apf-work'),
                        pthread=True)
    kexec = build_static('kexec-load', os.path.join(BUILD, 'kexec-load'))
    with open(GUEST_INIT) as f:
        return vm.busybox_initramfs(dest, f.read(), GUEST_APPLETS,
                                    {'bin/apf-work': work,
                                     'bin/kexec-load': kexec})


def checks():
    """The guest checks, in order, as guest-init.sh declares them."""
    with open(GUEST_INIT) as f:
        for line in f:
            if line.startswith('CHECKS="'):
                return line.split('"')[1].split()
    raise Error(f'{GUEST_INIT}: no CHECKS="..." line')
