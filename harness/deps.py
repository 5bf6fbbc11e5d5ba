"""Debian packages the harness needs, installed through apt."""

import functools
import os
import re
import subprocess

from . import common
from .common import BASE_PACKAGE, BASE_TARBALL, BUILD, Error, log, run

# Build machine packages (amd64 or arm64 alike).  Each one is here because
# the harness runs something from it; nothing is assumed to be on the
# machine already (a fresh Debian 12 install has no compiler, and
# --no-install-recommends keeps Recommends such as ipxe-qemu out).
PACKAGES = [
    'gcc', 'libc6-dev',                 # HOSTCC for kbuild's own tools
    'gcc-aarch64-linux-gnu', 'libc6-dev-arm64-cross', 'ccache', 'make',
    'bc', 'bison', 'flex', 'libssl-dev', 'libelf-dev', 'cpio', 'kmod',
    'rsync', 'perl', 'python3', 'xz-utils', 'e2fsprogs', 'git',
    'qemu-system-arm', 'sparse',
    'python3-ply', 'python3-git',   # checkpatch's SPDX check (spdxcheck.py)
    'strace',       # make check: which files the L1 QEMU opens
    'mmdebstrap',   # make fresh-check: a minimal Debian 12 root
]
# arm64 packages unpacked (never run on the build machine) into images.
ARM64_PACKAGES = ['busybox-static']


def installed_version(pkg):
    res = subprocess.run(['dpkg-query', '-W', '-f=${Status} ${Version}', pkg],
                         capture_output=True, text=True)
    if res.returncode != 0 or not res.stdout.startswith('install ok installed'):
        return None
    return res.stdout.split()[-1]


def available_versions(pkg):
    res = subprocess.run(['apt-cache', 'madison', pkg], capture_output=True,
                         text=True)
    vers = []
    for line in res.stdout.splitlines():
        parts = [p.strip() for p in line.split('|')]
        if len(parts) >= 2 and parts[1] not in vers:
            vers.append(parts[1])
    return vers


def apt_update():
    run(['apt-get', 'update', '-q'])


def version_key(version):
    """A sort key for Debian versions of one package (dpkg's order)."""
    def cmp(a, b):
        if a == b:
            return 0
        res = subprocess.run(['dpkg', '--compare-versions', a, 'lt', b])
        return -1 if res.returncode == 0 else 1
    return functools.cmp_to_key(cmp)(version)


def newest(versions):
    return max(versions, key=version_key) if versions else None


def choose_version(available):
    """The base version to install from the versions apt offers.

    The pinned one if apt still has it.  Debian's security archive keeps
    only recent versions of linux-source-<base>: when the pinned one is
    gone, take the newest of the same series with a warning (the base
    commit and the baseline differ from the pinned ones).  A version the
    user asked for (BASE_VERSION=) is never replaced.
    """
    want = common.BASE_VERSION
    if want in available:
        return want
    hint = ('; available: ' + (', '.join(available) or 'none') +
            '. Choose one with BASE_VERSION=<version>, or add an apt '
            'source that carries it.')
    if os.environ.get('BASE_VERSION') or not available:
        raise Error(f'{BASE_PACKAGE} version {want} is not in the package '
                    'index' + hint)
    take = newest(available)
    log(f'WARNING: the pinned {BASE_PACKAGE} {want} is no longer in the '
        f'package index; taking the newest, {take}. The base commit and '
        'the results can differ from the pinned base: check that the '
        'series applies (make newest-check) and compare with a baseline '
        f'made on {take} (make baseline). Set BASE_VERSION={take} to '
        'silence this, or update the pin in harness/common.py.')
    return take


def ensure(update=True):
    """Install what is missing; pin linux-source-<base> (choose_version)."""
    common.check_base()
    if os.geteuid() != 0:
        missing = [p for p in PACKAGES if not installed_version(p)]
        if missing or installed_version(BASE_PACKAGE) != common.BASE_VERSION:
            raise Error('missing packages and not root: run as root, or '
                        'install: ' + ' '.join(missing + [BASE_PACKAGE]))
        return
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    need_arm64 = 'arm64' not in subprocess.run(
        ['dpkg', '--print-foreign-architectures'], capture_output=True,
        text=True).stdout.split() and \
        subprocess.run(['dpkg', '--print-architecture'], capture_output=True,
                       text=True).stdout.strip() != 'arm64'
    if need_arm64:
        run(['dpkg', '--add-architecture', 'arm64'])
        update = True
    missing = [p for p in PACKAGES if not installed_version(p)]
    installed = installed_version(BASE_PACKAGE)
    base_ok = installed == common.BASE_VERSION
    if not missing and base_ok and not need_arm64:
        log(f'packages: all present, {BASE_PACKAGE} {common.BASE_VERSION}')
        return
    if update:
        apt_update()
    if not base_ok:
        version = choose_version(available_versions(BASE_PACKAGE))
        common.set_base_version(version)
        base_ok = installed == version
    pkgs = missing + ([] if base_ok
                      else [f'{BASE_PACKAGE}={common.BASE_VERSION}'])
    if pkgs:
        run(['apt-get', 'install', '-y', '-q', '--no-install-recommends',
             '--allow-downgrades'] + pkgs, env=env)
    if not os.path.exists(BASE_TARBALL):
        raise Error(f'{BASE_PACKAGE} installed but {BASE_TARBALL} is missing')


def arm64_package(pkg):
    """Unpack an arm64 Debian package under build/arm64/<pkg>; return it."""
    dest = os.path.join(BUILD, 'arm64', pkg)
    stamp = dest + '.stamp'
    if os.path.exists(stamp):
        return dest
    dl = os.path.join(BUILD, 'arm64', 'debs')
    os.makedirs(dl, exist_ok=True)
    res = run(['apt-get', '-o', 'APT::Sandbox::User=root', 'download',
           f'{pkg}:arm64'], cwd=dl, check=False)
    if res.returncode != 0:
        if os.geteuid() == 0:
            apt_update()
        res = run(['apt-get', '-o', 'APT::Sandbox::User=root', 'download',
           f'{pkg}:arm64'], cwd=dl,
                  check=False)
    debs = sorted(f for f in os.listdir(dl)
                  if f.startswith(pkg + '_') and f.endswith('_arm64.deb'))
    if res.returncode != 0 or not debs:
        raise Error(f'cannot download {pkg}:arm64; enable the architecture '
                    'with "dpkg --add-architecture arm64 && apt-get update" '
                    '(make deps does this)')
    run(['rm', '-rf', dest], quiet=True)
    run(['dpkg-deb', '-x', os.path.join(dl, debs[-1]), dest])
    open(stamp, 'w').close()
    return dest


def dependency_closure(pkgs):
    """The installed packages that pkgs pull in through Depends/Pre-Depends.

    Every alternative of an "a | b" dependency and every provider of a
    virtual package counts, so the set may be larger than what apt chose,
    never smaller.  Recommends and Suggests do not count: the harness
    installs with --no-install-recommends.
    """
    res = subprocess.run(
        ['dpkg-query', '-W', '-f=${Package}\t${Status}\t${Depends}, '
         '${Pre-Depends}\t${Provides}\n'], capture_output=True, text=True)
    deps, providers = {}, {}
    for line in res.stdout.splitlines():
        name, status, dep, prov = (line.split('\t') + [''] * 4)[:4]
        if not status.endswith(' installed'):
            continue
        deps[name] = [re.sub(r'[\s(:].*', '', alt.strip())
                      for group in dep.split(',') for alt in group.split('|')
                      if alt.strip()]
        for p in prov.split(','):
            if p.strip():
                providers.setdefault(re.sub(r'[\s(:].*', '', p.strip()),
                                     []).append(name)
    seen, todo = set(), list(pkgs)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        todo += deps.get(p, []) + providers.get(p, [])
    return seen


def owners(paths):
    """{path: package} for the paths a Debian package installed.

    With merged /usr a file opened as /usr/lib/x may be registered as
    /lib/x (or the other way round): both spellings are asked.
    """
    ask = {}
    for path in paths:
        ask[path] = path
        m = re.match(r'^/usr(/(?:lib|lib64|bin|sbin)/.*)$', path)
        if m:
            ask[m.group(1)] = path
        elif re.match(r'^/(?:lib|lib64|bin|sbin)/', path):
            ask['/usr' + path] = path
    res = subprocess.run(['dpkg-query', '-S'] + sorted(ask),
                         capture_output=True, text=True)
    found = {}
    for line in res.stdout.splitlines():
        pkgs, _, path = line.partition(': ')
        if path in ask and ', ' not in pkgs:
            found[ask[path]] = pkgs.split(':')[0]
    return found
