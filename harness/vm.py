"""The L1 KVM host under QEMU: test package, initramfs, boot, results."""

import os
import re
import platform
import shutil
import subprocess
import threading
import time

from . import deps, tap
from .common import KVM_INIT, TEST_LIST, TOP, Error, log

TESTS = os.path.join(TOP, 'tests')
LIST = TEST_LIST             # per base: tests/kvm-selftests-<base>.list
PACKAGE_LIST = 'kvm-selftests.list'     # its name in the package
RUNNER = os.path.join(TESTS, 'run-kvm-selftests.sh')
PATTERNS = os.path.join(TESTS, 'splat-patterns')
RUN_GUEST = os.path.join(TESTS, 'run-guest.sh')
APF_POSTCOPY = os.path.join(TESTS, 'apf-postcopy.sh')
L1_VMM = os.path.join(TESTS, 'l1-vmm.sh')
APF_SWAP = os.path.join(TESTS, 'apf-swap.sh')
APF_L1 = os.path.join(TESTS, 'apf-l1.sh')
APF_KEXEC = os.path.join(TESTS, 'apf-kexec.sh')
GUEST_INIT = os.path.join(TESTS, 'guest-init.sh')

MODES = {
    # name: (kernel command line, what KVM prints when it is up: per base)
    'vhe': ('', KVM_INIT.get('vhe')),
    'nvhe': ('kvm-arm.mode=nvhe', KVM_INIT.get('nvhe')),
    'protected': ('kvm-arm.mode=protected', KVM_INIT.get('protected')),
}
INIT_MARK = 'harness: init reached'
DONE_MARK = 'harness: tests finished'


def boot_timeout():
    val = os.environ.get('BOOT_TIMEOUT') or '300'
    if not val.isdigit() or int(val) == 0:
        raise Error(f'BOOT_TIMEOUT={val}: give a whole number of seconds')
    return int(val)


BASE_ARGS = '#base:'


LIST_VAR = re.compile(r'\$\{([A-Z_][A-Z0-9_]*):-([^}]*)\}')
LIST_VALUE = re.compile(r'^[A-Za-z0-9_.,:=+-]+$')


def expand_vars(cmd, where, env=None):
    """${NAME:-default} in a test command: NAME from the environment.

    Only plain words are accepted (the command runs in L1's shell), so a
    bad value fails here, naming the variable.
    """
    env = os.environ if env is None else env

    def one(m):
        val = env.get(m.group(1)) or m.group(2)
        if not LIST_VALUE.match(val):
            raise Error(f'{where}: {m.group(1)}={val!r} is not a plain '
                        'value (letters, digits, _.,:=+-)')
        return val
    return LIST_VAR.sub(one, cmd)


OPTINS_OFF = 'OPTINS=0'


def list_binary(cmd):
    """The binary of a test list command, past an "OPTINS=0" prefix.

    "OPTINS=0 <binary> [args]" runs the binary with the series' host
    opt-ins (kvm-arm.sdei, kvm-arm.async_pf) off; run-kvm-selftests.sh
    does the switching.
    """
    words = cmd.split()
    if words and words[0] == OPTINS_OFF:
        words = words[1:]
    return words[0] if words else ''


def read_list(path=LIST, base=False):
    """[(name, timeout, command)] from the test list.

    A line "#base: <binary> [args]" just before an entry gives the command
    that entry runs on the unpatched base (make baseline, base=True): the
    same binary, with arguments the base understands.  "${NAME:-default}"
    in a command takes NAME from the environment (e.g. a larger count).
    """
    tests = []
    pending = None
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if line.startswith(BASE_ARGS):
                pending = (n, line[len(BASE_ARGS):].strip())
                if not pending[1]:
                    raise Error(f'{path}:{n}: "{BASE_ARGS}" needs a command')
                continue
            if not line or line.startswith('#'):
                continue
            parts = line.split(None, 2)
            if len(parts) < 3 or not parts[1].isdigit():
                raise Error(f'{path}:{n}: expected "<name> <timeout> '
                            f'<binary> [args]", got: {line}')
            cmd = expand_vars(parts[2], f'{path}:{n}')
            if pending:
                if list_binary(pending[1]) != list_binary(cmd):
                    raise Error(f'{path}:{pending[0]}: "{BASE_ARGS}" must '
                                f'run the same binary as the entry after '
                                f'it ({list_binary(cmd)})')
                if base:
                    cmd = pending[1]
                pending = None
            tests.append((parts[0], int(parts[1]), cmd))
    if pending:
        raise Error(f'{path}:{pending[0]}: "{BASE_ARGS}" with no entry after '
                    'it')
    return tests


ONLY_IN = '#only-in:'
BASE_FAILS = '#base-fails:'


def _marks(path, tag):
    """{name: [words]} for the entries a "<tag> <word>..." line marks."""
    marks, pending = {}, None
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if line.startswith(tag):
                if pending:
                    raise Error(f'{path}:{n}: a second "{tag}" for one '
                                'entry')
                pending = (n, line[len(tag):].split())
                if not pending[1]:
                    raise Error(f'{path}:{n}: "{tag}" needs a mode')
                continue
            if not line or line.startswith('#'):
                continue
            if pending:
                marks[line.split()[0]] = pending[1]
                pending = None
    if pending:
        raise Error(f'{path}:{pending[0]}: "{tag}" with no entry after it')
    return marks


def only_in(path=LIST):
    """{name: [modes]} for the entries a "#only-in: <mode>..." line marks.

    Such an entry runs, in a run of the whole list, only in the modes
    named; FULL=1 (or naming it in TESTS=) runs it in every mode.  It is
    for tests whose code paths do not depend on the KVM mode, so that
    the default make test stays within its time on a fresh machine.
    """
    return _marks(path, ONLY_IN)


def base_fails(path=LIST):
    """{name: ([modes], signature)} for "#base-fails: <mode>... [| text]".

    Such an entry fails on the unpatched base in those modes (the reason
    is in the list's comment above it).  Its failure there is reported as
    TAP "not ok ... # TODO" and does not fail the run only if it fails the
    way the recorded baseline of that mode does (tap.known_failure): a
    mark never hides a test that passes on the base, one that did not
    finish, or one that fails in another way.  The text after "|", if
    any, must be in the test's log (the assertion the base stops at).
    """
    out = {}
    for name, words in _marks(path, BASE_FAILS).items():
        line = ' '.join(words)
        modes, _, sig = line.partition('|')
        if not modes.split():
            raise Error(f'{path}: "{BASE_FAILS}" for {name} needs a mode')
        out[name] = (modes.split(), sig.strip())
    return out


def select(names):
    tests = read_list()
    known = [t[0] for t in tests]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise Error(f'unknown test {", ".join(unknown)}; known tests:\n  ' +
                    '\n  '.join(known))
    return [t for t in tests if not names or t[0] in names]


def present(names):
    """The names, in order, that the base's test list has."""
    known = {t[0] for t in read_list()}
    return [n for n in names if n in known]


GUEST_DIR = 'guest/'      # list entries run from here are not selftests


def make_package(selftests, dest, listfile=LIST, base=False, guest=None):
    """Runner, list, patterns and static binaries, as one directory.

    With base=True the list carries the base's commands (see read_list).
    guest, (kernel Image, initramfs), goes to kvm/guest/ with the script
    that starts it (tests/run-guest.sh) and the guest's /init.
    """
    kdir = os.path.join(dest, 'kvm')
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(kdir)
    for f in (RUNNER, PATTERNS):
        shutil.copy2(f, dest)
    tests = read_list(listfile, base=base)
    with open(os.path.join(dest, PACKAGE_LIST), 'w') as f:
        f.write('# the test list as run on the unpatched base\n' if base else
                f'# {os.path.basename(listfile)}, variables expanded\n')
        f.write(''.join(f'{n} {t} {c}\n' for n, t, c in tests))
    if guest:
        gdir = os.path.join(kdir, GUEST_DIR)
        os.makedirs(gdir)
        for src, name in ((RUN_GUEST, 'run-guest.sh'),
                          (APF_POSTCOPY, 'apf-postcopy.sh'),
                          (L1_VMM, 'l1-vmm.sh'),
                          (APF_SWAP, 'apf-swap.sh'),
                          (APF_L1, 'apf-l1.sh'),
                          (APF_KEXEC, 'apf-kexec.sh'),
                          (GUEST_INIT, 'guest-init.sh'),
                          (guest[0], 'Image'),
                          (guest[1], 'initramfs.cpio')):
            shutil.copy2(src, os.path.join(gdir, name))
    for _, _, cmd in tests:
        binary = list_binary(cmd)
        src = os.path.join(selftests, binary)
        if os.path.exists(src) and not os.path.exists(
                os.path.join(kdir, binary)):
            os.makedirs(os.path.dirname(os.path.join(kdir, binary)),
                        exist_ok=True)
            shutil.copy2(src, os.path.join(kdir, binary))
    return dest


INIT = r'''#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug
mount -t tmpfs tmp /tmp
mkdir -p /tests /results
mount -t 9p -o trans=virtio,version=9p2000.L,ro tests /tests
mount -t 9p -o trans=virtio,version=9p2000.L results /results
# The arm64 QEMU for L2 guests, on a read-only virtio disk (tests/run-guest.sh)
if [ -b /dev/vda ]; then
	mkdir -p /vmm && mount -t ext4 -o ro /dev/vda /vmm && export VMM_ROOT=/vmm
fi
echo "@INIT_MARK@ ($(uname -r))"
ls -l /dev/kvm
set -- $(cat /results/request 2>/dev/null)
/tests/run-kvm-selftests.sh -o /results/logs "$@" 2>&1 | tee /results/results.tap
dmesg >/results/dmesg.txt
sync
echo "@DONE_MARK@"
poweroff -f
'''


L1_APPLETS = (
    'sh', 'mount', 'umount', 'ls', 'cat', 'echo', 'dmesg', 'poweroff',
    'sync', 'uname', 'tee', 'mkdir', 'grep', 'awk', 'sed', 'cut', 'tr',
    'tail', 'wc', 'date', 'timeout', 'dirname', 'basename', 'sleep', 'cp',
    'rm', 'env', 'free', 'ps', 'head', 'sort', 'true', 'false', 'test', '[',
    'pwd', 'cmp', 'diff', 'find', 'xargs', 'nproc', 'chroot', 'kill',
    'mkfifo', 'mkswap', 'swapon', 'swapoff', 'rmdir')


def busybox_initramfs(dest, init_text, applets, extra=None):
    """An initramfs cpio: static arm64 busybox, its applets, /init.

    extra maps paths in the initramfs (bin/apf-work) to files to copy.
    """
    bb = os.path.join(deps.arm64_package('busybox-static'), 'bin', 'busybox')
    root = dest + '.d'
    shutil.rmtree(root, ignore_errors=True)
    for d in ('bin', 'sbin', 'proc', 'sys', 'dev', 'tmp', 'etc'):
        os.makedirs(os.path.join(root, d))
    shutil.copy2(bb, os.path.join(root, 'bin', 'busybox'))
    with open(os.path.join(root, 'init'), 'w') as f:
        f.write(init_text)
    os.chmod(os.path.join(root, 'init'), 0o755)
    # busybox --install needs to run on arm64; make the links here instead.
    for applet in applets:
        os.symlink('busybox', os.path.join(root, 'bin', applet))
    for path, src in (extra or {}).items():
        shutil.copy2(src, os.path.join(root, path))
    with open(dest, 'wb') as out:
        find = subprocess.Popen(['find', '.', '-print0'], cwd=root,
                                stdout=subprocess.PIPE)
        subprocess.run(['cpio', '--quiet', '-o', '-0', '-H', 'newc',
                        '--owner', '0:0'], cwd=root, stdin=find.stdout,
                       stdout=out, check=True)
        find.wait()
    shutil.rmtree(root)
    return dest


def make_initramfs(dest):
    """The L1 initramfs: /init runs the request found on /results."""
    return busybox_initramfs(dest, INIT.replace('@INIT_MARK@', INIT_MARK)
                             .replace('@DONE_MARK@', DONE_MARK), L1_APPLETS)


def accel():
    """['-accel', ...] and a description: KVM when it can nest, else TCG."""
    tcg = ['-accel', 'tcg,thread=multi', '-cpu', 'max']
    if platform.machine() != 'aarch64':
        return tcg, 'TCG (build machine is not arm64)'
    if not os.access('/dev/kvm', os.R_OK | os.W_OK):
        log('no usable /dev/kvm: falling back to TCG')
        return tcg, 'TCG (no /dev/kvm)'
    probe = subprocess.run(
        ['qemu-system-aarch64', '-M', 'virt,virtualization=on,gic-version=3',
         '-accel', 'kvm', '-cpu', 'host', '-display', 'none', '-nodefaults',
         '-S', '-monitor', 'stdio'], input='quit\n', capture_output=True,
        text=True, timeout=60)
    if probe.returncode == 0:
        return ['-accel', 'kvm', '-cpu', 'host'], 'KVM (nested)'
    why = (probe.stderr.strip().splitlines() or [''])[-1]
    log('this host\'s KVM does not offer nested virtualization (EL2 for '
        f'guests): falling back to TCG, which is much slower. QEMU said: {why}')
    return tcg, 'TCG (no nested virtualization in the host KVM)'


def l1_command(image, initramfs, package, rundir, extra='', acc=None,
               vmm=None, smp=2):
    """The qemu-system-aarch64 command line that boots the L1 host.

    It asks for exactly the devices L1 uses: -nodefaults and -nic none
    drop QEMU's default NIC (whose option ROM, efi-virtio.rom, comes from
    ipxe-qemu, a package the harness does not install) and every other
    default device.  The console is the PL011 on stdio; files travel over
    two virtio-9p shares; vmm, an ext4 image holding the arm64 QEMU that
    starts L2 guests, is a read-only virtio disk.
    """
    if acc is None:
        acc = ['-accel', 'tcg,thread=multi', '-cpu', 'max']
    # One 1 GiB hugetlb page, which only a contiguous boot-time
    # reservation can give: aarch64/stage2_fault_stress_test_1g maps it
    # with a level 1 block and gives it back to L1 when it ends (-r).
    # The series' SDEI and async PF are host opt-ins, off by default:
    # L1 offers them, as its tests and L2 guests need them; the list's
    # OPTINS=0 entries turn them off around a test.  A kernel without
    # them (the base) ignores both.
    append = ' '.join(filter(None, [
        'console=ttyAMA0', 'panic=-1', 'log_buf_len=16M', 'rdinit=/init',
        'transparent_hugepage=madvise', 'hugepagesz=1G', 'hugepages=1',
        'kvm-arm.sdei=1', 'kvm-arm.async_pf=1', extra]))
    # pci-testdev: a PCI device with a 4K memory BAR 0 and no driver in
    # L1, for the VFIO (no-IOMMU) Normal-NC test to assign.
    return ['qemu-system-aarch64',
            '-M', 'virt,virtualization=on,gic-version=3',
            '-smp', str(smp), '-m', '4G', '-nodefaults', '-nic', 'none',
            '-device', 'pci-testdev'] + acc + [
        '-display', 'none', '-monitor', 'none', '-serial', 'stdio',
        '-no-reboot', '-kernel', image, '-initrd', initramfs,
        '-append', append,
        '-virtfs', f'local,path={package},mount_tag=tests,'
                   'security_model=none,readonly=on',
        '-virtfs', f'local,path={rundir},mount_tag=results,'
                   'security_model=none'] + ([
        '-drive', f'file={vmm},if=none,format=raw,readonly=on,id=vmm',
        '-device', 'virtio-blk-pci,drive=vmm'] if vmm else [])


def boot(image, initramfs, package, mode, names, rundir, timeout, vmm=None,
         smp=2):
    """Boot the L1 host in a KVM mode and run the named tests.

    Returns a tap.ModeResult.  Keeps console.log, results.tap, dmesg.txt and
    logs/ under rundir.
    """
    shutil.rmtree(rundir, ignore_errors=True)
    os.makedirs(rundir)
    with open(os.path.join(rundir, 'request'), 'w') as f:
        f.write(' '.join(names) + '\n')
    extra, expect = MODES[mode]
    acc, how = accel()
    cmd = l1_command(image, initramfs, package, rundir, extra, acc, vmm, smp)
    console = os.path.join(rundir, 'console.log')
    log(f'boot {mode} ({how}); console: {os.path.relpath(console, TOP)}')
    with open(os.path.join(rundir, 'qemu-cmdline'), 'w') as f:
        f.write(' '.join(cmd) + '\n')
    state = {'init': None, 'done': False}
    limit = boot_timeout()
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def reader():
        with open(console, 'wb') as out:
            for raw in proc.stdout:
                out.write(raw)
                out.flush()
                line = raw.decode('utf-8', 'replace').rstrip()
                if INIT_MARK in line:
                    state['init'] = time.monotonic() - start
                    log(f'{mode}: reached the test script after '
                        f'{state["init"]:.0f}s')
                elif DONE_MARK in line:
                    state['done'] = True
                elif tap.is_result(line) or line.startswith('#   '):
                    # results, and the runner's tail of a failed test's log
                    log(f'{mode}: {line}')
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    killed = None
    while proc.poll() is None:
        time.sleep(1)
        now = time.monotonic() - start
        if state['init'] is None and now > limit:
            killed = f'the boot did not reach the test script in {limit}s'
        elif state['init'] is not None and now > state['init'] + timeout:
            killed = f'the tests did not finish within {timeout}s'
        if killed:
            proc.kill()
            break
    proc.wait()
    t.join(10)
    proc.stdout.close()
    took = time.monotonic() - start
    return tap.mode_result(mode, rundir, expect, killed, took, state['init'])
