"""Entry point: python3 -m harness <command>.  See README.md and Makefile."""

import argparse
import os
import re
import sys

from . import bench, bench_apf, deps, fresh, guest, kbuild, series, tap, vm
from .common import BASE_TREE, BASELINE, BUILD, OUT, RUNS, TOP, TREE, WORK, \
    Error, Stage, check_base, fmt_time, log, migrate_layout, print_timings, run

ALL_MODES = ['vhe', 'nvhe', 'protected']
# The main job's guests: one that just runs (timer interrupts), one per
# feature of the series that a guest can show; those of them that the
# base's test list has (arch_timer is a common test from 6.12 on).
DEMO_TESTS = ['aarch64/arch_timer', 'arch_timer',
              'aarch64/stage2_fault_stress_test_thp',
              'aarch64/vfio_normal_nc_test', 'guest', 'guest-apf-postcopy',
              'guest-apf-postcopy-off', 'guest-apf-swap',
              'guest-apf-swap-off']


def show_apf(rundir):
    """Async PF end to end, for make run: each second of apf-work in the
    postcopy-migrated guest, on beside off, and the ratios."""
    runs = {}
    for onoff, name in bench_apf.APFG_NAMES.items():
        logdir = os.path.join(rundir, 'logs', name)
        try:
            fig = bench_apf.parse_apfg(logdir)
            with open(os.path.join(logdir, 'console-src.log'), 'rb') as f:
                text = f.read().decode('utf-8', 'replace')
            with open(os.path.join(logdir, 'console-dst.log'), 'rb') as f:
                text += f.read().decode('utf-8', 'replace')
        except (OSError, Error):
            return
        per_s = {int(m.group(1)): (m.group(2), m.group(3))
                 for m in bench_apf.APFG_SECOND.finditer(text)}
        line = re.search(r'kvm-guest: [^\r\n]*', text)
        runs[onoff] = (fig, per_s, line.group(0) if line else
                       'kvm-guest: (nothing: no-kvmapf)')
    if len(runs) < 2:
        return
    print('    Async PF end to end: the guest postcopy-migrated between two '
          'QEMUs in L1, two tasks reading 64 MiB at random and two counting '
          '(per second, each pair summed)')
    print('      (on: the test entry also takes cpu1 offline and back every '
          '3 s; make bench BENCH_PARTS=apf-guest compares without that, '
          'over several boots)')
    for onoff in ('on', 'off'):
        print(f'      {onoff:3}: {runs[onoff][2]}')
    print('      second  readers on counters on  readers off counters off')
    for t in sorted(set(runs['on'][1]) | set(runs['off'][1])):
        on = runs['on'][1].get(t, ('-', '-'))
        off = runs['off'][1].get(t, ('-', '-'))
        print(f'      {t:6} {on[0]:>10} {on[1]:>11} {off[0]:>12} '
              f'{off[1]:>12}')
    on, off = runs['on'][0], runs['off'][0]
    print(f'      counter after the switch / at the end: on '
          f'{on["counter_share"]:.2f}, off {off["counter_share"]:.2f}')
    for key, what in (('counted', 'counter work'),
                      ('postcopy_vcpu_blocktime_ms', 'vCPU blocktime (ms)')):
        a, b = on.get(key), off.get(key)
        ratio = f'{a / b:.2f}x' if a is not None and b else 'n/a'
        a_s = f'{a:.0f}' if a is not None else 'n/a'
        b_s = f'{b:.0f}' if b is not None else 'n/a'
        print(f'      {what}: on {a_s}, off {b_s}, on/off {ratio}')


def show_apf_swap(rundir):
    """Async PF end to end under swap, for make run: each second of
    apf-work on beside off, and the ratios (harness/bench_apf.py
    parse_apfs)."""
    runs = {}
    dirs = {onoff: os.path.join(rundir, 'logs', name)
            for onoff, name in bench_apf.APFS_NAMES.items()}
    try:
        figs = bench_apf.parse_apfs_pair(dirs)
        for onoff, logdir in dirs.items():
            with open(os.path.join(logdir, 'console-vm.log'), 'rb') as f:
                text = f.read().decode('utf-8', 'replace')
            per_s = {int(m.group(1)): (m.group(2), m.group(3))
                     for m in bench_apf.APFS_LINE.finditer(text)}
            runs[onoff] = (figs[onoff], per_s)
    except (OSError, Error):
        return
    on, off = runs['on'][0], runs['off'][0]
    print('    Async PF end to end, swap: QEMU\'s memory cgroup in L1 '
          'limited to 128 MiB under a guest whose two tasks read 192 MiB at '
          'random while two count; swap on dm-delay, 10 ms a read')
    print(f'      limit set {on["squeeze_at"]:.1f} s (on) and '
          f'{off["squeeze_at"]:.1f} s (off) after apf-work was ready; '
          f'measured after it from second {on["window_from"]:.0f}; per '
          'second, each pair summed')
    print('      second  readers on counters on  readers off counters off')
    for t in sorted(set(runs['on'][1]) | set(runs['off'][1])):
        a = runs['on'][1].get(t, ('-', '-'))
        b = runs['off'][1].get(t, ('-', '-'))
        print(f'      {t:6} {a[0]:>10} {a[1]:>11} {b[0]:>12} {b[1]:>12}')
    for key, what, fmt in (
            ('work_rate_run', 'total work per second, whole run (loop '
             'iterations)', '{:.3g}'),
            ('work_rate', 'total work per second after the squeeze',
             '{:.3g}'),
            ('counter_share', 'counters over their rate before the limit',
             '{:.2f}'),
            ('touched_rate', 'readers\' pages per second', '{:.0f}')):
        a, b = on.get(key), off.get(key)
        ratio = f'{a / b:.2f}x' if a is not None and b else 'n/a'
        print(f'      {what}: on {fmt.format(a)}, off {fmt.format(b)}, '
              f'on/off {ratio}')
    print(f'      not-present {on.get("guest_not_present", 0):.0f} for '
          f'{on.get("major_faults_during_run", 0):.0f} major faults; one '
          'run each: make bench BENCH_PARTS=apf-swap takes medians')


def show_guest(rundir):
    """The L2 guest's first kernel lines and its QEMU, for make run."""
    gdir = os.path.join(rundir, tap.GUEST_LOGS)
    try:
        with open(os.path.join(gdir, 'console.log'), 'rb') as f:
            text = f.read().decode('utf-8', 'replace').replace('\r', '')
        with open(os.path.join(gdir, 'qemu-cmdline')) as f:
            cmdline = f.read().strip()
    except OSError:
        return
    lines = text.split('guest: dmesg follows\n', 1)[-1].splitlines()
    first = lines[:4] + [ln for ln in lines if 'smccc: KVM' in ln][:1]
    # SDEI: the client's probe, and the KUnit suite's events (SDEI part)
    first += [ln for ln in lines if ' sdei: ' in ln or
              re.search(r'(not )?ok \d+ sdei_test_|# arm_sdei: ', ln)]
    print(f'    L2 guest, started in L1 by: {cmdline[:150]}...')
    for ln in first:
        print(f'      | {ln}')


def prepare(base=False, flavour='host', keep_going=False, l2=True,
            guest_flavour='guest'):
    """Tree, kernel Image, selftests and package for the series or base.

    With l2, also the guest kernel (flavour guest_flavour, in the
    package) and the arm64 QEMU image for L1; without, the last value
    returned is None.  The label names the run's folder in build/runs.
    """
    deps.ensure()
    if base:
        tree = series.base_worktree()
        label = f'base-{flavour}'
    else:
        series.make_tree(keep_work=True)
        tree = TREE
        label = flavour
    out = os.path.join(OUT, label)
    image = kbuild.build_kernel(tree, out, flavour)
    if guest_flavour != 'guest':
        label = f'{label}+{guest_flavour}'
    selftests = kbuild.build_selftests(tree, out, keep_going=keep_going)
    l2files = None
    if l2:
        l2files = (kbuild.build_kernel(tree, os.path.join(
            OUT, ('base-' if base else '') + guest_flavour), guest_flavour),
            os.path.join(BUILD, 'guest-initramfs.cpio'))
    with Stage('test package and initramfs'):
        if l2:
            guest.make_guest_initramfs(l2files[1])
        package = vm.make_package(selftests,
                                  os.path.join(WORK, 'pkg', label),
                                  base=base, guest=l2files)
        initramfs = vm.make_initramfs(os.path.join(BUILD, 'initramfs.cpio'))
    return image, initramfs, package, label, guest.vmm_image() if l2 \
        else None


def parse_list(value, allowed=None, what='value'):
    items = [v for v in (value or '').replace(',', ' ').split() if v]
    if allowed is not None:
        bad = [v for v in items if v not in allowed]
        if bad:
            raise Error(f'unknown {what} {", ".join(bad)}; choose from: '
                        f'{", ".join(allowed)}')
    return items


def run_modes(args, base=False):
    names = parse_list(args.tests)
    tests = vm.select(names)        # unknown names fail before any build
    modes = parse_list(args.modes, ALL_MODES, 'KVM mode') or ALL_MODES
    flavour = getattr(args, 'flavour', 'host')
    image, initramfs, package, label, vmm = prepare(
        base=base, flavour=flavour, keep_going=base,
        guest_flavour=getattr(args, 'guest_flavour', 'guest'))
    if base:
        # Tests the series adds have no source in the base: leave them out
        # (the summary shows them as new) rather than record them failing
        # like a test that exists there but no longer builds.
        src = os.path.join(BASE_TREE, 'tools', 'testing', 'selftests',
                           'kvm')
        absent = [t[0] for t in tests
                  if not t[2].startswith(vm.GUEST_DIR) and
                  not os.path.exists(os.path.join(src,
                                                  vm.list_binary(t[2]) +
                                                  '.c'))]
        if absent:
            log('not in the base (added by the series), not run: ' +
                ', '.join(absent))
        tests = [t for t in tests if t[0] not in absent]
    # A run of the whole list leaves "#only-in:" entries to their modes,
    # unless FULL=1; a baseline is always whole.
    marks = {} if names or base or args.full else vm.only_in()
    for tag, ms in ((vm.ONLY_IN, marks.values()),
                    (vm.BASE_FAILS, [m for m, _ in
                                     vm.base_fails().values()])):
        unknown = sorted({m for modes in ms for m in modes} -
                         set(ALL_MODES))
        if unknown:
            raise Error(f'{os.path.relpath(vm.LIST, TOP)}: "{tag}" names '
                        f'no KVM mode {", ".join(unknown)}; modes: '
                        f'{", ".join(ALL_MODES)}')
    results = []
    for mode in modes:
        mine = [t for t in tests if mode in marks.get(t[0], [mode])]
        left = len(tests) - len(mine)
        timeout = sum(t[1] for t in mine) + 120
        with Stage(f'L1 host in {mode} mode: {len(mine)} tests' +
                   (f' ({left} left to other modes; FULL=1 runs them)'
                    if left else '')):
            rundir = os.path.join(RUNS, label, mode)
            results.append(vm.boot(image, initramfs, package, mode,
                                   [t[0] for t in mine], rundir, timeout,
                                   vmm))
            with open(os.path.join(rundir, 'mode.tap'), 'w') as f:
                f.write(results[-1].tap())
    return results, names


def cmd_test(args):
    results, names = run_modes(args)
    print_timings()
    c = tap.summary(results, base_fails=vm.base_fails(),
                    base_tag=series.base_tag_name())
    return 1 if c['fail'] else 0


def cmd_baseline(args):
    results, names = run_modes(args, base=True)
    if not names and args.guest_flavour == 'guest':
        dest = BASELINE
        os.makedirs(dest, exist_ok=True)
        for r in results:
            with open(os.path.join(dest, f'{r.mode}.tap'), 'w') as f:
                f.write(f'# unpatched base {series.base_tag_name()}, '
                        f'{r.mode} mode, full test list less the tests '
                        'the series adds\n' + r.tap())
        log(f'baseline written to {os.path.relpath(dest, TOP)}/')
    else:
        log('a partial test list or another guest kernel: '
            f'{os.path.relpath(BASELINE, TOP)}/ left unchanged')
    print_timings()
    tap.summary(results, title=f'unpatched base {series.base_tag_name()}')
    return 0


def cmd_run(args):
    """The main job: boot the patched host in every mode, run a guest."""
    args.tests = args.tests or ' '.join(vm.present(DEMO_TESTS))
    results, _ = run_modes(args)
    print('\nKVM in the L1 host, per mode:')
    for r in results:
        con = os.path.join(r.rundir, 'console.log')
        with open(con, 'rb') as f:
            text = f.read().decode('utf-8', 'replace')
        kvm = [ln.strip() for ln in text.splitlines() if 'kvm [' in ln]
        print(f'  {r.mode}:')
        for ln in kvm[:8]:
            print(f'    {ln}')
        show_guest(r.rundir)
        show_apf(r.rundir)
        show_apf_swap(r.rundir)
        for name, status, detail in r.results:
            if name not in ('boot', 'kvm-init', 'kernel-log'):
                print(f'    guest {name}: {status} {detail}')
                logf = os.path.join(r.rundir, 'logs',
                                    name.replace('/', '_') + '.log')
                if os.path.exists(logf):
                    with open(logf, errors='replace') as f:
                        for ln in f.read().splitlines()[-4:]:
                            print(f'      | {ln}')
    print_timings()
    c = tap.summary(results, base_fails=vm.base_fails(),
                    base_tag=series.base_tag_name())
    return 1 if c['fail'] else 0


def cmd_package(args):
    _, _, package, label, _ = prepare()
    dest = os.path.join(WORK, 'kvm-selftests-arm64.tar.gz')
    run(['tar', '-czf', dest, '-C', os.path.dirname(package),
         '--transform', f's,^{label},kvm-selftests-arm64,', label])
    log(f'wrote {os.path.relpath(dest, TOP)}: copy it to the arm64 host, '
        'then: tar xzf kvm-selftests-arm64.tar.gz && '
        'sudo kvm-selftests-arm64/run-kvm-selftests.sh')
    return 0


def main(argv):
    p = argparse.ArgumentParser(prog='python3 -m harness')
    sub = p.add_subparsers(dest='cmd', required=True)
    sub.add_parser('deps', help='install the Debian packages')
    t = sub.add_parser('tree', help='base tree plus patches/')
    t.add_argument('--force', action='store_true')
    sub.add_parser('export', help='write the tree to patches/')
    sub.add_parser('export-check', help='fail if patches/ != tree')
    cs = sub.add_parser('check-series',
                        help='checkpatch + build every prefix')
    cs.add_argument('--from', dest='start_part', metavar='PART',
                    default=os.environ.get('FROM') or None,
                    help='build only the prefixes from this part on '
                    '(its Series-part name, e.g. apf); default: all')
    dc = sub.add_parser('defconfig', help="the user's recipe: defconfig, "
                        'CONFIG_KVM_GUEST on and off')
    dc.add_argument('--full', action='store_true',
                    help='the whole Image, not only the series\' '
                    'directories')
    b = sub.add_parser('build', help='kernel Image and selftests')
    b.add_argument('--flavour', default='host',
                   choices=sorted(kbuild.FLAVOURS))
    for name in ('test', 'baseline', 'run'):
        s = sub.add_parser(name)
        s.add_argument('--tests', default=os.environ.get('TESTS', ''))
        s.add_argument('--modes', default=os.environ.get('MODES', ''))
        s.add_argument('--full', action='store_true',
                       default=os.environ.get('FULL', '') not in ('', '0'),
                       help='every entry in every mode, "#only-in:" '
                       'entries too (FULL=1)')
        if name == 'test':
            # make kasan-test: the same tests on a KASAN host kernel.
            s.add_argument('--flavour', default='host',
                           choices=['host', 'kasan'])
        if name in ('test', 'baseline'):
            # make kcsan-test: the L2 guest's kernel with KCSAN (on the
            # base too, to tell the series' races from the base's).
            s.add_argument('--guest-flavour', default='guest',
                           choices=['guest', 'guest-kcsan'])
    sub.add_parser('package', help='static selftests + runner tarball')
    bn = sub.add_parser('bench', help='benchmarks: stage-2 faults, SDEI '
                        'delivery, async PF (BENCH_PARTS)')
    bn.add_argument('--rounds', type=int,
                    default=int(os.environ.get('ROUNDS') or 3))
    bn.add_argument('--vcpus', default=os.environ.get('VCPUS') or '1 2 4')
    sub.add_parser('list', help='the known test names')
    sub.add_parser('fresh-check', help='./kvm-series test in a new '
                   'minimal Debian 12 root')
    sub.add_parser('newest-check', help="does each base's series apply to "
                   "the newest version of its linux-source package?")
    args = p.parse_args(argv)
    try:
        check_base()
        migrate_layout()
        if args.cmd == 'deps':
            deps.ensure()
        elif args.cmd == 'tree':
            deps.ensure()
            series.make_tree(force=args.force)
        elif args.cmd == 'export':
            series.export()
        elif args.cmd == 'export-check':
            series.export_check()
        elif args.cmd == 'check-series':
            deps.ensure()
            series.check_series(kbuild, start_part=args.start_part)
        elif args.cmd == 'defconfig':
            deps.ensure()
            series.make_tree(keep_work=True)
            took = kbuild.defconfig_build(TREE, series.base_tag_name(),
                                          full=args.full)
            log('defconfig ' + ('Image' if args.full else 'objects of the '
                                'series\' directories') + ' built, ' +
                ', '.join(f'CONFIG_KVM_GUEST={v} in {fmt_time(t)}'
                          for v, t in took.items()))
        elif args.cmd == 'build':
            deps.ensure()
            series.make_tree(keep_work=True)
            kbuild.build_kernel(TREE, os.path.join(OUT, args.flavour),
                                args.flavour)
            kbuild.build_selftests(TREE, os.path.join(OUT, args.flavour))
        elif args.cmd == 'bench':
            vcpus = parse_list(args.vcpus)
            parts = parse_list(os.environ.get('BENCH_PARTS') or
                               'time lockstat sdei apf apf-guest apf-swap',
                               ['time', 'lockstat', 'sdei', 'apf',
                                'apf-guest', 'apf-swap'],
                               'BENCH_PARTS part')
            smp = os.environ.get('SMP') or '2'
            if args.rounds < 1 or not vcpus or not all(
                    v.isdigit() and 0 < int(v) <= 16 for v in vcpus):
                raise Error('bench: ROUNDS must be at least 1 and VCPUS a '
                            'list of vCPU counts from 1 to 16, e.g. '
                            'VCPUS="1 2 4"')
            if not smp.isdigit() or not 0 < int(smp) <= 16:
                raise Error(f'bench: SMP={smp}: the L1 host\'s CPU count, '
                            'from 1 to 16')
            return bench.run_bench(prepare, args.rounds,
                                   [int(v) for v in vcpus], int(smp), parts)
        elif args.cmd == 'fresh-check':
            deps.ensure()
            return fresh.fresh_check()
        elif args.cmd == 'newest-check':
            return 1 if series.newest_check() else 0
        elif args.cmd == 'list':
            print('\n'.join(t[0] for t in vm.read_list()))
        else:
            return {'test': cmd_test, 'baseline': cmd_baseline,
                    'run': cmd_run, 'package': cmd_package}[args.cmd](args)
    except Error as e:
        print_timings()
        print(f'error: {e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
