"""make fresh-check: the README's test command in a new minimal Debian 12.

A minimal Debian 12 root (mmdebstrap --variant=minbase, fed with this
machine's own apt sources and fetch settings) gets a clean clone of the
committed tree, and ./kvm-series test runs there on a short subset, as a
new user's first run would: every package it needs must come from the
harness's own lists.  The compiler cache is shared with this machine so
that the kernel build stays short; nothing else is.
"""

import glob
import os
import shutil
import subprocess
import time

from . import vm
from .common import (BASE, BUILD, TOP, WORK, Error, Stage, fmt_time, git,
                     log, run)

FRESH = os.path.join(BUILD, 'fresh')
MINBASE = os.path.join(FRESH, 'debian12-minbase.tar')
ROOT = os.path.join(FRESH, 'root')
SUITE = 'bookworm'
# One mode, three entries: a selftest guest with interrupts, a stage-2
# test of the series and the L2 Linux guest under the arm64 QEMU; with
# them the boot, KVM and kernel-log checks.
# (Those the base's list has: arch_timer is a common test from 6.12 on.)
DEFAULT_TESTS = ['aarch64/arch_timer', 'arch_timer',
                 'aarch64/stage2_fault_stress_test_thp', 'guest']
DEFAULT_MODES = 'nvhe'


def apt_sources():
    """This machine's enabled apt source files (one-line or deb822)."""
    files = [f for f in ['/etc/apt/sources.list'] +
             sorted(glob.glob('/etc/apt/sources.list.d/*.list') +
                    glob.glob('/etc/apt/sources.list.d/*.sources'))
             if os.path.isfile(f) and os.path.getsize(f)]
    if not files:
        raise Error('no apt sources configured on this machine '
                    '(/etc/apt/sources.list, /etc/apt/sources.list.d/): '
                    'add the Debian 12 archive you use, then retry')
    return files


def apt_fetch_options():
    """This machine's apt.conf.d files that say how apt fetches."""
    out = []
    for f in sorted(glob.glob('/etc/apt/apt.conf.d/*')):
        try:
            with open(f) as fh:
                if 'Acquire' in fh.read():
                    out.append(f)
        except (OSError, UnicodeDecodeError):
            continue
    return out


def make_minbase():
    if os.path.exists(MINBASE):
        return
    os.makedirs(FRESH, exist_ok=True)
    cmd = ['mmdebstrap', '--variant=minbase', '--mode=root']
    for f in apt_fetch_options():
        cmd.append(f'--aptopt={f}')
    tmp = MINBASE[:-len('.tar')] + '.tmp.tar'     # the suffix says tar
    cmd += [SUITE, tmp] + apt_sources()
    with Stage('minimal Debian 12 root (mmdebstrap)'):
        run(cmd)
        os.rename(tmp, MINBASE)


def mounted_under(path):
    path = os.path.realpath(path)
    with open('/proc/self/mountinfo') as f:
        return [ln.split()[4] for ln in f
                if (ln.split()[4] + '/').startswith(path + '/')]


def remove_root():
    left = mounted_under(ROOT)
    if left:
        raise Error(f'still mounted under {ROOT}: {", ".join(left)}; '
                    'unmount them (umount -R) before make fresh-check')
    if os.path.exists(ROOT):
        run(['rm', '-rf', '--one-file-system', ROOT], quiet=True)


def fresh_check():
    """Run ./kvm-series test in a new Debian 12 root; return its status."""
    if os.geteuid() != 0:
        raise Error('make fresh-check needs root (mmdebstrap, chroot)')
    if git(['status', '--porcelain'], cwd=TOP).stdout.strip():
        log('note: uncommitted changes are not part of the check; it runs '
            'the committed tree (HEAD)')
    tests = os.environ.get('FRESH_TESTS') or ' '.join(
        vm.present(DEFAULT_TESTS))
    modes = os.environ.get('FRESH_MODES') or DEFAULT_MODES
    start = time.monotonic()
    make_minbase()
    remove_root()
    os.makedirs(ROOT)
    run(['tar', '-xf', MINBASE, '-C', ROOT], quiet=True)
    shutil.copy2('/etc/resolv.conf', os.path.join(ROOT, 'etc'))
    inside = ROOT + TOP          # the same path inside: ccache hits
    os.makedirs(os.path.dirname(inside), exist_ok=True)
    git(['clone', '-q', '--no-hardlinks', TOP, inside], cwd=TOP)
    ccache = subprocess.run(['ccache', '-k', 'cache_dir'],
                            capture_output=True, text=True).stdout.strip() \
        or '/root/.cache/ccache'
    os.makedirs(ccache, exist_ok=True)
    os.makedirs(ROOT + '/ccache', exist_ok=True)
    logf = os.path.join(FRESH, 'test.log')
    # A private mount namespace: every mount below goes away with it.
    script = f'''set -e
root={ROOT}
mount --rbind /dev "$root/dev"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --bind {ccache} "$root/ccache"
exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 CCACHE_DIR=/ccache TESTS="{tests}" \
    MODES="{modes}" BASE="{BASE}" sh -c 'cd {TOP} && ./kvm-series test'
'''
    log(f'fresh Debian 12 root: {os.path.relpath(ROOT, TOP)}; running '
        f'BASE={BASE} TESTS="{tests}" MODES="{modes}" ./kvm-series test '
        'there; log: '
        f'{os.path.relpath(logf, TOP)}')
    with Stage('./kvm-series test in the fresh root'), open(logf, 'w') as f:
        proc = subprocess.Popen(['unshare', '--mount', '--propagation',
                                 'private', '--fork', 'sh', '-c', script],
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        for raw in proc.stdout:
            f.write(raw.decode('utf-8', 'replace'))
            f.flush()
            line = raw.decode('utf-8', 'replace').rstrip()
            if line.startswith(('[harness] ==', 'ok ', 'not ok ')) or \
                    ' passed, ' in line or line.startswith('error:'):
                print(f'  | {line}', flush=True)
        rc = proc.wait()
    took = fmt_time(time.monotonic() - start)
    runs = os.path.relpath(ROOT + os.path.join(WORK, 'runs'), TOP)
    if rc == 0:
        log(f'fresh-check PASSED in {took}: a new Debian 12 root ran '
            f'./kvm-series test ({modes}: {tests}); log '
            f'{os.path.relpath(logf, TOP)}, runs under {runs}/')
    else:
        log(f'fresh-check FAILED (exit {rc}) after {took}; log '
            f'{os.path.relpath(logf, TOP)}, runs under {runs}/')
    return 0 if rc == 0 else 1
