"""Debian packages the harness needs, installed through apt."""

import os
import subprocess

from .common import (BASE_PACKAGE, BASE_TARBALL, BASE_VERSION, BUILD, Error,
                     log, run)

# Build machine packages (amd64 or arm64 alike).
PACKAGES = [
    'gcc-aarch64-linux-gnu', 'libc6-dev-arm64-cross', 'ccache', 'make',
    'bc', 'bison', 'flex', 'libssl-dev', 'libelf-dev', 'cpio', 'kmod',
    'rsync', 'perl', 'python3', 'xz-utils', 'e2fsprogs', 'git',
    'qemu-system-arm', 'sparse',
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


def ensure(update=True):
    """Install what is missing; pin linux-source-6.1 to BASE_VERSION."""
    if os.geteuid() != 0:
        missing = [p for p in PACKAGES if not installed_version(p)]
        if missing or installed_version(BASE_PACKAGE) != BASE_VERSION:
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
    base_ok = installed_version(BASE_PACKAGE) == BASE_VERSION
    if not missing and base_ok and not need_arm64:
        log('packages: all present, ' f'{BASE_PACKAGE} {BASE_VERSION}')
        return
    if update:
        apt_update()
    if not base_ok:
        vers = available_versions(BASE_PACKAGE)
        if BASE_VERSION not in vers:
            raise Error(f'{BASE_PACKAGE} version {BASE_VERSION} is not in '
                        'the package index; available: '
                        f'{", ".join(vers) or "none"}. Choose one with '
                        'BASE_VERSION=<version> (the base commit and the '
                        'baseline results change with it), or add an apt '
                        'source that carries it.')
    pkgs = missing + [f'{BASE_PACKAGE}={BASE_VERSION}']
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
