"""Kernel and selftest builds: config fragments, cross-compiler, ccache."""

import os
import re
import shutil

from .common import (BASE, CONFIGS, CROSS, JOBS, OUT, Error, Stage, git,
                     log, run)

# Build flavours: the fragments merged, in order, onto tinyconfig.
FLAVOURS = {
    'host': ['base.config', 'host.config', 'debug.config'],
    'perf': ['base.config', 'host.config'],
    'guest': ['base.config', 'guest.config'],     # the L2 Linux guest
    'guest-kcsan': ['base.config', 'guest.config', 'kcsan.config'],
    'lockstat': ['base.config', 'host.config', 'lockstat.config'],
    'kasan': ['base.config', 'host.config', 'debug.config', 'kasan.config'],
}


def fragments(name):
    """configs/<name>, then configs/<base>/<name> where the base adds to it."""
    own = os.path.join(CONFIGS, BASE, name)
    return [os.path.join(CONFIGS, name)] + ([own] if os.path.exists(own)
                                            else [])


def make_env():
    env = dict(os.environ)
    env.setdefault('CCACHE_BASEDIR', os.path.dirname(CONFIGS))
    env.update({'ARCH': 'arm64', 'CROSS_COMPILE': CROSS, 'LC_ALL': 'C',
                'KBUILD_BUILD_USER': 'harness', 'KBUILD_BUILD_HOST': 'harness',
                'KBUILD_BUILD_TIMESTAMP': 'Thu Jan  1 00:00:00 UTC 2025'})
    return env


def kmake(tree, out, targets, quiet=False):
    cmd = ['make', '-s', f'-j{JOBS}', '-C', tree, f'O={out}',
           f'CC=ccache {CROSS}gcc'] + targets
    return run(cmd, env=make_env(), quiet=quiet)


def read_config(*paths):
    """{CONFIG_X: value} set by the given .config files or fragments.

    Options written "=n" map to 'n'; "# CONFIG_X is not set" lines are not
    returned (a caller treats a missing option as 'n').
    """
    opts = {}
    for path in paths:
        with open(path) as f:
            for line in f:
                m = re.match(r'^(CONFIG_\w+)=(.*)$', line.strip())
                if m:
                    opts[m.group(1)] = m.group(2)
    return opts


def kconfig_defined(tree, opt):
    """True if a Kconfig file arm64 reads defines CONFIG_<opt>.

    Other architectures' directories are left out: 6.1 defines
    KVM_GUEST for x86 only, and the base must not count it as arm64's.
    """
    name = opt[len('CONFIG_'):]
    paths = [p for p in sorted(os.listdir(tree))
             if p != 'arch' and not p.startswith('.')]
    paths += [os.path.join('arch', 'Kconfig'), os.path.join('arch', 'arm64')]
    res = run(['grep', '-rqsE', '--include=Kconfig*',
               rf'^\s*(menu)?config\s+{name}\s*$', '--'] + paths,
              cwd=tree, check=False, quiet=True)
    return res.returncode == 0


def config_wrong(cfg, frags):
    """Options the fragments set that cfg does not have, as 'OPT=v (got w)'."""
    have = read_config(cfg)
    return {opt: f'{opt}={val} (got {have.get(opt, "n")})'
            for opt, val in read_config(*frags).items()
            if have.get(opt, 'n') != val}


def configure(tree, out, flavour):
    """Make out/.config for the flavour; return its path.

    The fragments are merged onto tinyconfig once; later calls only run
    olddefconfig.  If that drops an option the fragments set (the tree
    moved to a commit that lacks it, and back), the .config is made again
    from the fragments, so an option lost at one commit does not stay
    lost.  An option no Kconfig file of the tree defines (a prefix of the
    series that does not add it yet) is reported and tolerated; any other
    option not honoured is an error.
    """
    frags = [p for f in FLAVOURS[flavour] for p in fragments(f)]
    cfg = os.path.join(out, '.config')
    stamp = os.path.join(out, '.fragments')
    sig = ''.join(open(f).read() for f in frags)
    absent = set()
    if os.path.exists(cfg) and os.path.exists(stamp) and \
            open(stamp).read() == sig:
        kmake(tree, out, ['olddefconfig'], quiet=True)
        wrong = config_wrong(cfg, frags)
        absent = {o for o in wrong if not kconfig_defined(tree, o)}
        if set(wrong) <= absent:
            return cfg
        log(f'{flavour} .config lost '
            f'{", ".join(sorted(set(wrong) - absent))}; configuring again')
    os.makedirs(out, exist_ok=True)
    kmake(tree, out, ['tinyconfig'])
    run([os.path.join(tree, 'scripts/kconfig/merge_config.sh'), '-m',
         '-O', out, cfg] + frags, env=make_env(), capture=True)
    kmake(tree, out, ['olddefconfig'])
    wrong = config_wrong(cfg, frags)
    absent = {o for o in wrong if not kconfig_defined(tree, o)}
    if absent:
        log(f'{flavour}: not defined in this tree, left out: '
            f'{", ".join(sorted(absent))}')
    bad = [wrong[o] for o in sorted(set(wrong) - absent)]
    if bad:
        raise Error('config fragments not honoured (missing dependency or '
                    'option renamed):\n  ' + '\n  '.join(bad))
    with open(stamp, 'w') as f:
        f.write(sig)
    return cfg


def build_kernel(tree, out, flavour='host'):
    """Configure and build arch/arm64/boot/Image; return its path."""
    with Stage(f'kernel build ({flavour}) in {os.path.basename(out)}'):
        configure(tree, out, flavour)
        kmake(tree, out, ['Image'])
    return os.path.join(out, 'arch/arm64/boot/Image')


def build_selftests(tree, out, keep_going=False):
    """Static arm64 KVM selftests under out/kselftest/kvm; return the dir."""
    hdr = os.path.join(out, 'hdr')
    dest = os.path.join(out, 'kselftest', 'kvm')
    with Stage(f'KVM selftests in {os.path.basename(out)}'):
        run(['make', '-s', '-C', tree, f'O={os.path.join(out, "hdr-build")}',
             f'INSTALL_HDR_PATH={hdr}', 'headers_install'], env=make_env())
        os.makedirs(dest, exist_ok=True)
        cmd = ['make', '-s', f'-j{JOBS}', '-C',
               os.path.join(tree, 'tools/testing/selftests/kvm'),
               f'OUTPUT={dest}', f'INSTALL_HDR_PATH={hdr}',
               f'KHDR_INCLUDES=-isystem {hdr}/include',
               f'CC=ccache {CROSS}gcc', 'LDFLAGS=-static']
        if keep_going:
            cmd.insert(2, '-k')
        res = run(cmd, env=make_env(), check=not keep_going)
        if keep_going and res.returncode != 0:
            log('some selftests did not build (kept going); they will be '
                'reported as not built')
    return dest


# The user's recipe (README): arm64 defconfig, CONFIG_KVM_GUEST on.  Off
# too: the option must build both ways.
DEFCONFIG_GUEST = ('y', 'n')


def series_dirs(tree, base):
    """Kbuild directories holding the .c files the series changes.

    virt/kvm/ is built as part of arch/arm64/kvm/; a subdirectory of a
    directory in the list is built with it.
    """
    names = git(['diff', '--name-only', base], cwd=tree).stdout.split()
    dirs = set()
    for name in names:
        if not name.endswith('.c') or name.startswith(('tools/', 'samples/')):
            continue
        d = os.path.dirname(name)
        dirs.add('arch/arm64/kvm' if d == 'virt/kvm' else d)
    return sorted(d + '/' for d in dirs
                  if not any(d.startswith(o + '/') for o in dirs))


def defconfig_build(tree, base, full=False):
    """defconfig with CONFIG_KVM_GUEST=y and =n: the series' directories,
    or with full=True the whole Image; return {value: seconds}."""
    took = {}
    dirs = series_dirs(tree, base)
    for val in DEFCONFIG_GUEST:
        out = os.path.join(OUT, f'defconfig-kvm-guest-{val}')
        what = 'Image' if full else ' '.join(dirs)
        with Stage(f'defconfig, CONFIG_KVM_GUEST={val}: {what}') as st:
            os.makedirs(out, exist_ok=True)
            kmake(tree, out, ['defconfig'], quiet=True)
            run([os.path.join(tree, 'scripts/config'), '--file',
                 os.path.join(out, '.config'),
                 '--enable' if val == 'y' else '--disable', 'KVM_GUEST'])
            kmake(tree, out, ['olddefconfig'], quiet=True)
            got = read_config(os.path.join(out, '.config')).get(
                'CONFIG_KVM_GUEST', 'n')
            if got != val:
                raise Error(f'defconfig: CONFIG_KVM_GUEST={val} asked, '
                            f'{got} set (its dependencies, '
                            'ARM_SDE_INTERFACE and HAVE_ARM_SMCCC_DISCOVERY, '
                            'are off?)')
            kmake(tree, out, ['Image'] if full else dirs)
        took[val] = st.took
    return took


def clean(out):
    shutil.rmtree(out, ignore_errors=True)


def selftests_missing(tree, out):
    """Build the KVM selftests from scratch binaries; return those missing.

    Objects are reused between calls (make rebuilds what changed), but
    every binary is removed first, so a binary left from an earlier build
    cannot hide a failure.
    """
    from .vm import read_list, list_binary
    dest = os.path.join(out, 'kselftest', 'kvm')
    binaries = sorted({list_binary(cmd) for _, _, cmd in read_list()})
    for b in binaries:
        try:
            os.remove(os.path.join(dest, b))
        except FileNotFoundError:
            pass
    build_selftests(tree, out, keep_going=True)
    return {b for b in binaries if not os.path.exists(os.path.join(dest, b))}
