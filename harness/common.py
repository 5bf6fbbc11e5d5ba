"""Paths, settings and small helpers shared by the harness modules."""

import os
import shlex
import subprocess
import sys
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(TOP, 'build')
CONFIGS = os.path.join(TOP, 'configs')
RESULTS = os.path.join(TOP, 'results')

# The bases the series is kept for, each one Debian's linux-source-<base>
# package at a pinned version, and what differs between them: the line
# KVM prints once it is initialised in each mode.  BASE picks one (the
# default is 6.1); BASE_VERSION overrides the pinned version.
BASES = {
    '6.1': {
        'version': '6.1.192-2',
        'kvm_init': {'vhe': 'VHE mode initialized successfully',
                     'nvhe': 'Hyp mode initialized successfully',
                     'protected': 'Protected nVHE mode initialized '
                                  'successfully'},
    },
    '6.12': {
        'version': '6.12.118-1~deb12u1',
        'kvm_init': {'vhe': 'VHE mode initialized successfully',
                     'nvhe': 'Hyp nVHE mode initialized successfully',
                     # On a CPU with VHE (QEMU's "max"), 6.12 runs its
                     # protected-mode hypervisor in hVHE: EL2 with
                     # HCR_EL2.E2H set, still separate from the host.
                     'protected': 'Protected hVHE mode initialized '
                                  'successfully'},
    },
}
DEFAULT_BASE = '6.1'
BASE = os.environ.get('BASE') or DEFAULT_BASE
_PROFILE = BASES.get(BASE, {})

# Per base: the series, its test list and baseline, and under build/<base>
# the kernel tree, its build outputs and the runs.  Shared between bases:
# build/arm64 (unpacked arm64 packages), build/vmm, build/fresh.
PATCHES = os.path.join(TOP, 'patches', BASE)
TEST_LIST = os.path.join(TOP, 'tests', f'kvm-selftests-{BASE}.list')
BASELINE = os.path.join(RESULTS, 'baseline', BASE)
WORK = os.path.join(BUILD, BASE)
TREE = os.path.join(WORK, 'linux')         # base + series, where work happens
BASE_TREE = os.path.join(WORK, 'base')     # git worktree at the base tag
OUT = os.path.join(WORK, 'out')            # O= build directories
RUNS = os.path.join(WORK, 'runs')          # one directory per run and mode

BASE_PACKAGE = f'linux-source-{BASE}'
PINNED_VERSION = _PROFILE.get('version', '')
BASE_VERSION = os.environ.get('BASE_VERSION') or PINNED_VERSION
BASE_TARBALL = f'/usr/src/linux-source-{BASE}.tar.xz'
KVM_INIT = _PROFILE.get('kvm_init', {})


def check_base():
    """Fail with the list of bases if BASE names none of them."""
    if BASE not in BASES:
        raise Error(f'unknown base {BASE!r} (BASE=); bases: '
                    + ', '.join(BASES))


def migrate_layout():
    """Move a 6.1 work area from build/ to build/6.1/ (the layout before
    the harness knew more than one base), so that no work is lost."""
    old = os.path.join(BUILD, 'linux')
    if BASE != '6.1' or not os.path.isdir(old) or os.path.exists(WORK):
        return
    log('moving the 6.1 work area from build/ to '
        f'{os.path.relpath(WORK, TOP)}/')
    os.makedirs(WORK)
    for name in ('linux', 'base', 'out', 'runs', 'pkg', 'tree.json',
                 'kvm-selftests-arm64.tar.gz'):
        if os.path.exists(os.path.join(BUILD, name)):
            os.rename(os.path.join(BUILD, name), os.path.join(WORK, name))
    if os.path.isdir(BASE_TREE):
        git(['worktree', 'repair', BASE_TREE], check=False)


def set_base_version(version):
    """Use another version of the base package (see deps.ensure())."""
    global BASE_VERSION
    BASE_VERSION = version


# Identity and dates used for every commit the harness makes, so that the
# base commit id and the tree's commit ids are reproducible.
SERIES_NAME = 'arm64 KVM series'
SERIES_EMAIL = 'kvm-arm64-series@example.org'
BASE_DATE = '2025-01-01T00:00:00+0000'

CROSS = 'aarch64-linux-gnu-'
JOBS = str((os.cpu_count() or 1) + 1)


class Error(Exception):
    """A failure with a message that tells the user what to do."""


def log(msg):
    print(f'[harness] {msg}', flush=True)


def git_env(extra=None):
    """Environment for git commands: no user or system config leaks in."""
    env = dict(os.environ)
    env.update({
        'GIT_CONFIG_NOSYSTEM': '1',
        'GIT_CONFIG_GLOBAL': '/dev/null',
        'GIT_AUTHOR_NAME': SERIES_NAME,
        'GIT_AUTHOR_EMAIL': SERIES_EMAIL,
        'GIT_COMMITTER_NAME': SERIES_NAME,
        'GIT_COMMITTER_EMAIL': SERIES_EMAIL,
        'LC_ALL': 'C',
        'TZ': 'UTC',
    })
    env.update(extra or {})
    return env


def run(cmd, cwd=None, env=None, check=True, capture=False, quiet=False,
        input=None, timeout=None):
    """Run a command; raise Error naming it when it fails."""
    if not quiet:
        where = f' (in {os.path.relpath(cwd, TOP)})' if cwd else ''
        log('$ ' + ' '.join(shlex.quote(c) for c in cmd) + where)
    res = subprocess.run(cmd, cwd=cwd, env=env, input=input, text=True,
                         stdout=subprocess.PIPE if capture else None,
                         stderr=subprocess.PIPE if capture else None,
                         timeout=timeout)
    if check and res.returncode != 0:
        detail = ''
        if capture and res.stderr:
            detail = '\n' + res.stderr.strip()
        raise Error(f'command failed with exit {res.returncode}: '
                    f'{" ".join(cmd)}{detail}')
    return res


def git(args, cwd=TREE, **kw):
    kw.setdefault('env', git_env())
    kw.setdefault('capture', True)
    kw.setdefault('quiet', True)
    return run(['git'] + args, cwd=cwd, **kw)


class Stage:
    """Context manager that prints how long a stage took."""
    timings = []

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        self.start = time.monotonic()
        log(f'== {self.name}')
        return self

    def __exit__(self, *exc):
        took = self.took = time.monotonic() - self.start
        Stage.timings.append((self.name, took, exc[0] is None))
        state = '' if exc[0] is None else ' (failed)'
        log(f'== {self.name}: {fmt_time(took)}{state}')
        return False


def fmt_time(sec):
    sec = int(round(sec))
    return f'{sec // 60}m{sec % 60:02d}s' if sec >= 60 else f'{sec}s'


def print_timings():
    if not Stage.timings:
        return
    print('\nTime per stage:')
    for name, took, ok in Stage.timings:
        print(f'  {fmt_time(took):>8}  {name}{"" if ok else "  (failed)"}')
    sys.stdout.flush()
