"""Unit tests for the harness (make check); no kernel or QEMU needed."""

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import unittest
from unittest import mock

from harness import common, deps, guest, kbuild, series, tap, vm


class TapTest(unittest.TestCase):
    def test_parse_statuses(self):
        text = ('TAP version 13\n1..4\nok 1 a # 3s\n'
                'not ok 2 b # exit 1 after 2s\nok 3 c # SKIP no PMU\n'
                '# comment\nok 4 aarch64/d\n')
        self.assertEqual(tap.parse(text), [
            ('a', 'ok', '3s'), ('b', 'fail', 'exit 1 after 2s'),
            ('c', 'skip', 'SKIP no PMU'), ('aarch64/d', 'ok', '')])

    def test_splats_only_in_kernel_lines(self):
        text = ('[   12.000001] WARNING: CPU: 1 PID: 7 at mm/x.c:1 f+0x1\n'
                'WARNING: printed by a test, not the kernel\n'
                '[   13.5] BUG: sleeping function called from invalid '
                'context at mm/slab.h:1\n'
                '[   14.0] kvm [1]: VHE mode initialized successfully\n'
                '[   15.0] rcu: INFO: rcu_preempt self-detected stall\n')
        hits = tap.find_splats(text)
        self.assertEqual(len(hits), 3)
        self.assertIn('mm/x.c', hits[0])

    def test_every_pattern_matches_itself(self):
        # A pattern that cannot match its own example is a silent hole.
        for p in tap.splat_patterns():
            example = p.pattern.replace('[0-9]+', '42')
            self.assertTrue(tap.find_splats(f'[ 1.0] x {example} y'), p)

    def test_base_fails_counted_only_where_the_base_fails(self):
        # A "#base-fails:" failure is a TODO only in a mode the mark names,
        # where the baseline of that mode fails it the same way, the test
        # ended, and its log has the mark's text; otherwise it counts.
        with tempfile.TemporaryDirectory() as d:
            base = os.path.join(d, 'base')
            os.makedirs(base)
            os.makedirs(os.path.join(d, 'logs'))
            with open(os.path.join(base, 'vhe.tap'), 'w') as f:
                f.write('not ok 1 a # exit 254 after 1s\nnot ok 2 b\n'
                        'not ok 3 c # TIMEOUT after 9s\n'
                        'not ok 4 s # exit 254 after 1s\n'
                        'not ok 5 n # exit 1 after 1s\n'
                        'not ok 6 m # exit 1 after 1s\n'
                        'not ok 7 r # no result: L1 killed\n')
            with open(os.path.join(base, 'nvhe.tap'), 'w') as f:
                f.write('ok 1 a\nnot ok 2 b\n')
            # no protected.tap: no baseline there
            with open(os.path.join(d, 'logs', 's.log'), 'w') as f:
                f.write('x.c:12: something else\n')
            marks = {'a': (['vhe', 'nvhe', 'protected'], ''),
                     'c': (['vhe'], ''), 's': (['vhe'], 'x.c:34'),
                     'n': (['vhe'], ''), 'm': (['nvhe'], ''),
                     'r': (['vhe'], '')}
            vhe = [('a', 'fail', 'exit 254 after 2s'), ('b', 'fail', ''),
                   ('c', 'fail', 'exit 254 after 1s'),
                   ('s', 'fail', 'exit 254 after 1s'),
                   ('n', 'fail', 'no result: the runner stopped early'),
                   ('m', 'fail', 'exit 1 after 1s'),
                   ('r', 'fail', 'no result: L1 killed')]
            runs = [tap.ModeResult('vhe', vhe, d, 1.0),
                    tap.ModeResult('nvhe', [('a', 'fail', 'exit 254'),
                                            ('b', 'fail', '')], d, 1.0),
                    tap.ModeResult('protected', [('a', 'fail', 'exit 254')],
                                   d, 1.0)]
            with mock.patch('builtins.print') as out:
                c = tap.summary(runs, baseline_dir=base, base_fails=marks)
            text = '\n'.join(str(a.args[0]) for a in out.call_args_list)
            # Only vhe/a: b unmarked, c another way (exit, not TIMEOUT), s
            # without its text, n and r never ended (r's base neither),
            # m marked for nvhe only,
            # nvhe/a passed on the base, protected/a has no baseline.
            self.assertEqual((c['fail'], c['todo']), (9, 1), text)
            self.assertIn('not ok 1 vhe/a # TODO fails on the bare base '
                          'too', text)
            with open(os.path.join(d, 'logs', 's.log'), 'a') as f:
                f.write('x.c:34: the assertion the base stops at\n')
            with mock.patch('builtins.print'):
                c = tap.summary(runs, baseline_dir=base, base_fails=marks)
            self.assertEqual((c['fail'], c['todo']), (8, 2))
            with mock.patch('builtins.print'):
                c = tap.summary(runs, baseline_dir=base)
            self.assertEqual((c['fail'], c['todo']), (10, 0))

    def test_baseline_of_another_base_is_named(self):
        # A baseline recorded on another base version is said to be one.
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, 'vhe.tap'), 'w') as f:
                f.write('# unpatched base debian-6.1.192-2, vhe mode, full '
                        'test list\nok 1 a\n')
            runs = [tap.ModeResult('vhe', [('a', 'ok', '')], d, 1.0)]
            self.assertEqual(tap.baseline_origin('vhe', d),
                             'debian-6.1.192-2')
            for tag, said in (('debian-6.1.192-3', True),
                              ('debian-6.1.192-2', False)):
                with mock.patch('builtins.print') as out:
                    tap.summary(runs, baseline_dir=d, base_tag=tag)
                text = '\n'.join(str(a.args[0])
                                  for a in out.call_args_list)
                self.assertEqual('recorded on debian-6.1.192-2, not on '
                                 f"this run's base {tag}" in text, said,
                                 text)

    def test_base_fails_marks_match_the_baselines(self):
        # Each mark names a mode whose recorded baseline fails the test.
        for base in ('6.1', '6.12'):
            path = os.path.join(common.TOP, 'tests',
                                f'kvm-selftests-{base}.list')
            for name, (modes, _) in vm.base_fails(path).items():
                for mode in modes:
                    got = tap.load_baseline(mode, os.path.join(
                        common.TOP, 'results', 'baseline', base))
                    self.assertEqual((got or {}).get(name), 'fail',
                                     f'{base} {mode} {name}')

    def test_base_fails_parse(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, 'l')
            with open(path, 'w') as f:
                f.write('#only-in: vhe\n#base-fails: vhe nvhe | a.c:1 x\n'
                        't 10 t\n#base-fails: protected\nu 5 u\n')
            self.assertEqual(vm.base_fails(path),
                             {'t': (['vhe', 'nvhe'], 'a.c:1 x'),
                              'u': (['protected'], '')})
            self.assertEqual(vm.only_in(path), {'t': ['vhe']})
            for text in ('#base-fails: | a.c\nt 10 t\n',
                         '#base-fails: vhe\n#base-fails: nvhe\nt 10 t\n'):
                with open(path, 'w') as f:
                    f.write(text)
                with self.assertRaises(common.Error, msg=text):
                    vm.base_fails(path)

    def test_mode_result_boot_failure(self):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, 'console.log'), 'w') as f:
                f.write('[    0.0] Booting Linux\n')
            with open(os.path.join(d, 'request'), 'w') as f:
                f.write('x\n')
            r = tap.mode_result('vhe', d, 'VHE mode', 'hung', 5, None)
            st = {n: s for n, s, _ in r.results}
            self.assertEqual(st['boot'], 'fail')
            self.assertEqual(st['kvm-init'], 'fail')
            self.assertNotIn('x', st)   # not run, but boot already failed
            self.assertIn('console.log', r.results[0][2])

    def test_mode_result_missing_test_fails(self):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, 'console.log'), 'w') as f:
                f.write('[ 1.0] kvm [1]: VHE mode initialized '
                        'successfully\n')
            with open(os.path.join(d, 'request'), 'w') as f:
                f.write('a b\n')
            with open(os.path.join(d, 'results.tap'), 'w') as f:
                f.write('ok 1 a\nok 2 kernel-log\n')
            r = tap.mode_result('vhe', d, 'VHE mode initialized', None, 5,
                                3.0)
            st = {n: s for n, s, _ in r.results}
            self.assertEqual(st, {'boot': 'ok', 'kvm-init': 'ok', 'a': 'ok',
                                  'b': 'fail', 'kernel-log': 'ok'})


class BootTest(unittest.TestCase):
    """vm.boot() and vm.accel() with a stand-in qemu-system-aarch64."""

    @staticmethod
    def _fake_qemu(d, script):
        """Put a qemu-system-aarch64 running script in d; return PATH."""
        fake = os.path.join(d, 'qemu-system-aarch64')
        with open(fake, 'w') as f:
            f.write('#!/bin/sh\n' + script)
        os.chmod(fake, 0o755)
        return d + ':' + os.environ['PATH']

    def test_hung_boot_is_killed_and_named(self):
        with tempfile.TemporaryDirectory() as d:
            path = self._fake_qemu(d, 'echo "[    0.0] Booting Linux"\n'
                                      'exec sleep 60\n')
            env = {'PATH': path, 'BOOT_TIMEOUT': '2'}
            with mock.patch.dict(os.environ, env), \
                    mock.patch.object(vm.platform, 'machine',
                                      return_value='x86_64'):
                r = vm.boot('Image', 'initrd', d, 'vhe', ['a'],
                            os.path.join(d, 'run'), 600)
            self.assertLess(r.took, 30)
            boot = r.results[0]
            self.assertEqual(boot[:2], ('boot', 'fail'))
            self.assertIn('did not reach the test script in 2s', boot[2])
            self.assertIn('console.log', boot[2])
            with open(os.path.join(d, 'run', 'console.log')) as f:
                self.assertIn('Booting Linux', f.read())

    def _accel_with(self, qemu_script, kvm_usable=True):
        with tempfile.TemporaryDirectory() as d:
            path = self._fake_qemu(d, qemu_script)
            with mock.patch.dict(os.environ, {'PATH': path}), \
                    mock.patch.object(vm.platform, 'machine',
                                      return_value='aarch64'), \
                    mock.patch.object(vm.os, 'access',
                                      return_value=kvm_usable):
                return vm.accel()

    def test_accel_kvm_when_it_nests(self):
        args, how = self._accel_with('cat >/dev/null; exit 0\n')
        self.assertEqual(args[:2], ['-accel', 'kvm'])
        self.assertEqual(how, 'KVM (nested)')

    def test_accel_tcg_without_nesting(self):
        args, how = self._accel_with(
            'echo "qemu: KVM does not support EL2" >&2; exit 1\n')
        self.assertEqual(args[:2], ['-accel', 'tcg,thread=multi'])
        self.assertIn('no nested virtualization', how)

    def test_accel_tcg_without_dev_kvm(self):
        args, how = self._accel_with('exit 0\n', kvm_usable=False)
        self.assertEqual(args[:2], ['-accel', 'tcg,thread=multi'])
        self.assertIn('no /dev/kvm', how)


def qemu_opened_files(cmd, d):
    """Start cmd (a QEMU command line) paused, quit it; the files it opened.

    QEMU runs under strace with -S and a QMP socket: when QMP greets, every
    device is realized (a missing option ROM has already failed the start),
    so nothing of the guest ever runs.  Returns (exit status, output,
    [paths opened successfully]).
    """
    qmp = os.path.join(d, 'qmp.sock')
    trace = os.path.join(d, 'strace.txt')
    proc = subprocess.Popen(
        ['strace', '-f', '-qq', '-e', 'trace=open,openat', '-o', trace] +
        cmd + ['-S', '-qmp', f'unix:{qmp},server=on,wait=off'],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(qmp)
                f = s.makefile('rw')
                f.readline()                                # greeting
                for c in ('qmp_capabilities', 'quit'):
                    f.write(json.dumps({'execute': c}) + '\n')
                    f.flush()
                    f.readline()
            break
        except OSError:
            time.sleep(0.2)
    try:
        out = proc.communicate(timeout=30)[0].decode(errors='replace')
    except subprocess.TimeoutExpired:
        proc.kill()
        out = proc.communicate()[0].decode(errors='replace')
    opened = set()
    with open(trace) as f:
        for line in f:
            m = re.search(r'open(?:at)?\((?:[^,]+, )?"([^"]+)".*\) = \d+',
                          line)
            if m and re.match(r'/(usr|lib|lib64|bin|sbin|etc)/', m.group(1)):
                opened.add(os.path.normpath(m.group(1)))
    return proc.returncode, out, sorted(opened)


class L1CommandTest(unittest.TestCase):
    """The L1 QEMU needs nothing beyond the harness's package list."""

    @staticmethod
    def _command(d, drop=()):
        for f in ('Image', 'initrd', 'vmm.ext4'):
            with open(os.path.join(d, f), 'wb') as fh:
                fh.truncate(1 << 20)
        cmd = vm.l1_command(os.path.join(d, 'Image'),
                            os.path.join(d, 'initrd'), d, d,
                            vmm=os.path.join(d, 'vmm.ext4'))
        for opt in drop:                    # drop an option and its value
            i = cmd.index(opt[0])
            del cmd[i:i + len(opt)]
        return cmd

    def test_no_default_devices(self):
        with tempfile.TemporaryDirectory() as d:
            cmd = self._command(d)
        self.assertIn('-nodefaults', cmd)
        self.assertIn('none', cmd[cmd.index('-nic') + 1])

    def unlisted(self, drop=()):
        """Why the L1 command line needs more than PACKAGES, or None."""
        missing = [t for t in ('qemu-system-aarch64', 'strace')
                   if not shutil.which(t)]
        if missing:
            self.skipTest(f'{", ".join(missing)} not installed: run make '
                          'deps (make test does it before these tests)')
        with tempfile.TemporaryDirectory() as d:
            rc, out, opened = qemu_opened_files(self._command(d, drop), d)
        if rc != 0:
            return f'QEMU exited {rc}: {out.strip()}'
        allowed = deps.dependency_closure(deps.PACKAGES)
        owner = deps.owners(opened)
        extra = sorted(f'{owner[p]} ({p})' for p in owner
                       if owner[p] not in allowed)
        return ('files from packages not in harness/deps.py PACKAGES nor '
                'their dependencies: ' + ', '.join(extra)) if extra else None

    def test_l1_files_come_from_listed_packages(self):
        problem = self.unlisted()
        self.assertIsNone(problem, problem)

    def test_default_nic_is_caught(self):
        # The check above must be able to fail: QEMU's default NIC wants
        # efi-virtio.rom, from ipxe-qemu, a package the list leaves out
        # (missing: QEMU fails to start; installed: an unlisted package).
        problem = self.unlisted(drop=[('-nodefaults',), ('-nic', 'none')])
        self.assertIsNotNone(problem)
        self.assertIn('efi-virtio.rom', problem)


class GuestTest(unittest.TestCase):
    """tests/run-guest.sh with a stand-in QEMU, and its results in L0."""

    RUN_GUEST = os.path.join(common.TOP, 'tests', 'run-guest.sh')

    def run_guest(self, qemu_script, timeout=20):
        """Run run-guest.sh with a fake QEMU; (exit, checks.tap, outdir)."""
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d)
        gdir = os.path.join(d, 'pkg')
        os.makedirs(gdir)
        for src, name in ((self.RUN_GUEST, 'run-guest.sh'),
                          (vm.GUEST_INIT, 'guest-init.sh')):
            shutil.copy2(src, os.path.join(gdir, name))
        for name in ('Image', 'initramfs.cpio'):
            open(os.path.join(gdir, name), 'w').close()
        path = BootTest._fake_qemu(d, qemu_script)
        env = dict(os.environ, PATH=path)
        env.pop('VMM_ROOT', None)
        out = os.path.join(d, 'out')
        res = subprocess.run([os.path.join(gdir, 'run-guest.sh'), '-o', out,
                              '-t', str(timeout)], env=env,
                             capture_output=True, text=True, timeout=60)
        with open(os.path.join(out, 'checks.tap')) as f:
            return res.returncode, f.read(), out

    # The stand-in writes to the file of "-chardev file,...,path=X".
    CONSOLE = 'for a; do case $a in *path=*) con=${a##*path=};; esac; done\n'

    def test_checks_match_functions(self):
        with open(vm.GUEST_INIT) as f:
            text = f.read()
        for c in guest.checks():
            self.assertIn(f'check_{c.replace("-", "_")}() {{', text)

    def test_all_checks_and_poweroff(self):
        lines = ''.join(f'ok {i} {c} # fine\r\n'
                        for i, c in enumerate(guest.checks(), 1))
        rc, text, _ = self.run_guest(
            self.CONSOLE + f'printf "{lines}guest: dmesg ends\\r\\n" '
            '>"$con"\n')
        self.assertEqual(rc, 0, text)
        got = tap.parse(text)
        self.assertEqual([n for n, _, _ in got], guest.checks() +
                         ['poweroff'])
        self.assertTrue(all(st == 'ok' for _, st, _ in got))

    def test_hung_guest_is_killed(self):
        rc, text, out = self.run_guest(
            self.CONSOLE + 'echo "ok 1 boot # x" >"$con"\nexec sleep 60\n',
            timeout=2)
        self.assertEqual(rc, 1)
        st = {n: (s, d) for n, s, d in tap.parse(text)}
        self.assertEqual(st['boot'][0], 'ok')
        self.assertEqual(st['cpus'][0], 'fail')
        self.assertIn('no result from the guest', st['cpus'][1])
        self.assertIn(os.path.join(out, 'console.log'), st['cpus'][1])
        self.assertEqual(st['poweroff'][0], 'fail')
        self.assertIn('timeout', st['poweroff'][1])

    def test_failed_check_fails(self):
        rc, text, _ = self.run_guest(
            self.CONSOLE + 'printf "ok 1 boot\\nnot ok 2 cpus # online: 0'
            '\\nguest: dmesg ends\\n" >"$con"\n')
        self.assertEqual(rc, 1)
        st = {n: s for n, s, _ in tap.parse(text)}
        self.assertEqual((st['boot'], st['cpus'], st['poweroff']),
                         ('ok', 'fail', 'ok'))

    def test_l2_command_needs_only_the_vmm_packages(self):
        # The guest's QEMU runs from an arm64 root holding only
        # guest.VMM_PACKAGES and their dependencies: its command line must
        # not need anything else (no default NIC's option ROM).  Checked
        # with this machine's QEMU, TCG instead of KVM.
        if not (shutil.which('qemu-system-aarch64') and
                shutil.which('strace')):
            self.skipTest('qemu-system-aarch64 or strace not installed: run '
                          'make deps (make test does it before these tests)')
        rc, _, out = self.run_guest(
            self.CONSOLE + 'for a; do echo "$a"; done >"${con%/*}/args"\n')
        with open(os.path.join(out, 'args')) as f:
            args = f.read().splitlines()
        swap = {'kvm': 'tcg', 'host': 'max'}
        args = [swap.get(a, a) for a in args]
        with tempfile.TemporaryDirectory() as d:
            qrc, qout, opened = qemu_opened_files(
                ['qemu-system-aarch64'] + args, d)
        self.assertEqual(qrc, 0, qout)
        allowed = deps.dependency_closure(guest.VMM_PACKAGES)
        extra = sorted(f'{p} ({f})' for f, p in deps.owners(opened).items()
                       if p not in allowed)
        self.assertEqual(extra, [])

    @staticmethod
    def mode_result(d, files):
        """Write files ({path: text}) under d; the run's mode result."""
        for path, text in files.items():
            with open(os.path.join(d, path), 'w') as f:
                f.write(text)
        return tap.mode_result('vhe', d, 'VHE mode', None, 5, 1.0)

    def test_expanded_in_mode_result(self):
        with tempfile.TemporaryDirectory() as d:
            os.makedirs(os.path.join(d, tap.GUEST_LOGS))
            files = {
                'console.log': '[ 1.0] kvm [1]: VHE mode initialized '
                               'successfully\n',
                'request': 'a guest\n',
                'results.tap': 'ok 1 a\nnot ok 2 guest # exit 1\n',
                os.path.join(tap.GUEST_LOGS, 'checks.tap'):
                    'ok 1 boot\nnot ok 2 cpus # see /results/logs/guest/'
                    'console.log\n',
                os.path.join(tap.GUEST_LOGS, 'console.log'):
                    '[    2.5] BUG: sleeping function called from invalid '
                    'context at x.c:1\n'}
            r = self.mode_result(d, files)
        st = {n: s for n, s, _ in r.results}
        self.assertEqual(st['guest/boot'], 'ok')
        self.assertEqual(st['guest/cpus'], 'fail')
        self.assertNotIn('guest', st)       # a check failed: that says it
        self.assertNotIn('/results/',
                         {n: dd for n, _, dd in r.results}['guest/cpus'])
        self.assertEqual(st['kernel-log'], 'fail')   # the guest's splat

    def test_other_guest_entries_expanded(self):
        """guest-<name> entries: logs/<entry>/checks.tap, every console."""
        name = 'guest-apf-postcopy'
        with tempfile.TemporaryDirectory() as d:
            gdir = os.path.join('logs', name)
            os.makedirs(os.path.join(d, gdir))
            files = {
                'console.log': 'kvm [1]: VHE mode initialized\n',
                'request': name + '\n',
                'results.tap': f'ok 1 {name}\n',
                os.path.join(gdir, 'checks.tap'):
                    'ok 1 migrated\nok 2 async-pf # not_present 5\n',
                os.path.join(gdir, 'console-src.log'): 'clean\n',
                os.path.join(gdir, 'console-dst.log'):
                    '[    9.1] WARNING: CPU: 1 PID: 7 at x.c:2 f+0x4/0x8\n'}
            r = self.mode_result(d, files)
        st = {n: s for n, s, _ in r.results}
        self.assertEqual(st[f'{name}/migrated'], 'ok')
        self.assertEqual(st[f'{name}/async-pf'], 'ok')
        self.assertNotIn(name, st)
        self.assertEqual(st['kernel-log'], 'fail')   # the destination's


class CheckpatchMaintainersTest(unittest.TestCase):
    """checkpatch's MAINTAINERS question, answered by get_maintainer.pl."""

    PATCH = ('Subject: x\n---\n'
             'diff --git a/a/new.c b/a/new.c\nnew file mode 100644\n'
             '--- /dev/null\n+++ b/a/new.c\n@@ -0,0 +1 @@\n+int x;\n'
             'diff --git a/b/old.c b/b/old.c\n--- a/b/old.c\n'
             '+++ b/b/old.c\n')
    WARN = ('x.patch:20: WARNING:FILE_PATH_CHANGES: added, moved or deleted '
            'file(s), does MAINTAINERS need updating?\ntotal: 0 errors, 1 '
            'warnings\n')

    def verdict(self, sections, out=WARN):
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, '0001-x.patch')
            with open(p, 'w') as f:
                f.write(self.PATCH)
            res = mock.Mock(returncode=1, stdout=out, stderr='')
            with mock.patch.object(series, 'run', return_value=res), \
                    mock.patch.object(series, 'maintainer_sections',
                                      side_effect=sections) as ms:
                bad = series.checkpatch([p])
            return bad, [c.args[0] for c in ms.call_args_list]

    def test_added_file_with_a_section_passes(self):
        bad, asked = self.verdict(lambda f: ['KVM/arm64'])
        self.assertEqual(bad, [])
        self.assertEqual(asked, ['a/new.c'])     # only the added file

    def test_added_file_only_in_the_rest_fails(self):
        bad, _ = self.verdict(lambda f: [])
        self.assertEqual(len(bad), 1)

    def test_spdxcheck_that_cannot_run_is_an_error(self):
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, '0001-x.patch')
            with open(p, 'w') as f:
                f.write(self.PATCH)
            res = mock.Mock(returncode=0, stdout='', stderr=(
                'File "scripts/spdxcheck.py"\nModuleNotFoundError: No '
                "module named 'ply'\n"))
            with mock.patch.object(series, 'run', return_value=res):
                with self.assertRaisesRegex(common.Error, 'python3-ply'):
                    series.checkpatch([p])

    def test_other_messages_still_fail(self):
        out = self.WARN + 'x.patch:9: CHECK:SPACING: spaces preferred\n'
        bad, asked = self.verdict(lambda f: ['KVM/arm64'], out)
        self.assertEqual(len(bad), 1)
        self.assertEqual(asked, [])

    CAMEL = ('x.patch:9: CHECK:CAMELCASE: Avoid CamelCase: '
             '<MT_S2_DEVICE_nGnRE>\ntotal: 0 errors, 0 warnings, 1 checks\n')

    def camel_verdict(self, defined):
        with mock.patch.object(series, 'defined_in_base',
                               side_effect=lambda n: n in defined):
            return self.verdict(lambda f: ['KVM/arm64'], self.CAMEL)[0]

    def test_camelcase_the_base_defines_passes(self):
        self.assertEqual(self.camel_verdict({'MT_S2_DEVICE_nGnRE'}), [])

    def test_new_camelcase_fails(self):
        self.assertEqual(len(self.camel_verdict(set())), 1)

    def test_defined_in_base_reads_the_base_headers(self):
        with mock.patch.object(series, 'git',
                               return_value=mock.Mock(returncode=0)) as g, \
                mock.patch.object(series, 'base_tag_name',
                                  return_value='debian-x'):
            self.assertTrue(series.defined_in_base('MT_S2_DEVICE_nGnRE'))
        args = g.call_args.args[0]
        self.assertIn('debian-x', args)
        self.assertEqual(args[-2:], ['--', '*.h'])


class ListTest(unittest.TestCase):
    def test_list_parses_and_names_unique(self):
        # Every base's list, whichever BASE this run has.
        for base, timer in (('6.1', 'aarch64/arch_timer'),
                            ('6.12', 'arch_timer')):
            path = os.path.join(common.TOP, 'tests',
                                f'kvm-selftests-{base}.list')
            names = [t[0] for t in vm.read_list(path)]
            self.assertEqual(len(names), len(set(names)), base)
            self.assertIn(timer, names)
            self.assertIn('aarch64/sdei', names)

    def test_unknown_test_is_an_error(self):
        with self.assertRaises(common.Error) as cm:
            vm.select(['no_such_test'])
        self.assertIn('known tests', str(cm.exception))

    def test_bad_line(self):
        with tempfile.NamedTemporaryFile('w', suffix='.list') as f:
            f.write('name notanumber bin\n')
            f.flush()
            with self.assertRaises(common.Error):
                vm.read_list(f.name)

    def _list(self, text):
        f = tempfile.NamedTemporaryFile('w', suffix='.list', delete=False)
        self.addCleanup(os.remove, f.name)
        f.write(text)
        f.close()
        return f.name

    def test_base_command(self):
        path = self._list('# c\n#base: t\nt 10 t -e 5\nu 20 u -x\n')
        self.assertEqual(vm.read_list(path),
                         [('t', 10, 't -e 5'), ('u', 20, 'u -x')])
        self.assertEqual(vm.read_list(path, base=True),
                         [('t', 10, 't'), ('u', 20, 'u -x')])

    def test_only_in(self):
        path = self._list('#only-in: vhe\n#base: t\nt 10 t -e 5\n'
                          'u 20 u\n#only-in: vhe nvhe\nw 5 w\n')
        self.assertEqual(vm.only_in(path), {'t': ['vhe'],
                                            'w': ['vhe', 'nvhe']})
        self.assertEqual([t[0] for t in vm.read_list(path)], ['t', 'u', 'w'])
        for text in ('#only-in:\nt 10 t\n', 't 10 t\n#only-in: vhe\n'):
            with self.assertRaises(common.Error, msg=text):
                vm.only_in(self._list(text))

    def test_only_in_lists(self):
        # Every mark in each base's list names a known mode and an entry.
        for base in ('6.1', '6.12'):
            path = os.path.join(common.TOP, 'tests',
                                f'kvm-selftests-{base}.list')
            names = {t[0] for t in vm.read_list(path)}
            marks = list(vm.only_in(path).items())
            marks += [(n, m) for n, (m, _) in vm.base_fails(path).items()]
            for name, modes in marks:
                self.assertIn(name, names, base)
                self.assertLessEqual(set(modes),
                                     {'vhe', 'nvhe', 'protected'}, base)

    def test_base_command_errors(self):
        for text in ('#base: other\nt 10 t\n', '#base:\nt 10 t\n',
                     't 10 t\n#base: t\n'):
            with self.assertRaises(common.Error, msg=text):
                vm.read_list(self._list(text))

    def test_base_package_list(self):
        with tempfile.TemporaryDirectory() as d:
            path = self._list('#base: t\nt 10 t -e 5\n')
            vm.make_package(d, os.path.join(d, 'pkg'), path, base=True)
            with open(os.path.join(d, 'pkg', 'kvm-selftests.list')) as f:
                self.assertIn('t 10 t\n', f.read())

    def test_optins_off_prefix(self):
        path = self._list('t 10 OPTINS=0 aarch64/t -x\n')
        self.assertEqual(vm.read_list(path),
                         [('t', 10, 'OPTINS=0 aarch64/t -x')])
        self.assertEqual(vm.list_binary('OPTINS=0 aarch64/t -x'),
                         'aarch64/t')
        self.assertEqual(vm.list_binary('aarch64/t -x'), 'aarch64/t')
        with tempfile.TemporaryDirectory() as d:
            os.makedirs(os.path.join(d, 'aarch64'))
            open(os.path.join(d, 'aarch64', 't'), 'w').close()
            vm.make_package(d, os.path.join(d, 'pkg'), path)
            self.assertTrue(os.path.exists(
                os.path.join(d, 'pkg', 'kvm', 'aarch64', 't')))

    def test_l1_offers_the_optins(self):
        with tempfile.TemporaryDirectory() as d:
            cmd = L1CommandTest._command(d)
        append = cmd[cmd.index('-append') + 1].split()
        self.assertIn('kvm-arm.sdei=1', append)
        self.assertIn('kvm-arm.async_pf=1', append)

    def test_variables(self):
        path = self._list('t 10 t -n ${T_COUNT:-5} -x\n')
        with mock.patch.dict(os.environ, {}, clear=False):
            os.environ.pop('T_COUNT', None)
            self.assertEqual(vm.read_list(path), [('t', 10, 't -n 5 -x')])
            os.environ['T_COUNT'] = '500'
            self.assertEqual(vm.read_list(path), [('t', 10, 't -n 500 -x')])
            with tempfile.TemporaryDirectory() as d:
                vm.make_package(d, os.path.join(d, 'pkg'), path)
                with open(os.path.join(d, 'pkg', 'kvm-selftests.list')) as f:
                    self.assertIn('t 10 t -n 500 -x\n', f.read())
            os.environ['T_COUNT'] = '1; reboot'
            with self.assertRaisesRegex(common.Error, 'T_COUNT'):
                vm.read_list(path)


class ConfigTest(unittest.TestCase):
    def test_fragments_parse(self):
        frags = [os.path.join(common.CONFIGS, f)
                 for f in kbuild.FLAVOURS['host']]
        want = kbuild.read_config(*frags)
        for opt in ('CONFIG_KVM', 'CONFIG_PROVE_RCU',
                    'CONFIG_DEBUG_ATOMIC_SLEEP', 'CONFIG_VFIO_PCI',
                    'CONFIG_USERFAULTFD', 'CONFIG_ARM_PMU'):
            self.assertEqual(want.get(opt), 'y', opt)
        perf = kbuild.read_config(
            *[os.path.join(common.CONFIGS, f)
              for f in kbuild.FLAVOURS['perf']])
        self.assertNotIn('CONFIG_PROVE_LOCKING', perf)


class SeriesTest(unittest.TestCase):
    def test_guest_side(self):
        # KVM's host side alone: the host flavour builds it all.
        self.assertFalse(series.guest_side(
            ['arch/arm64/kvm/sdei.c', 'include/kvm/arm_hypercalls.h',
             'virt/kvm/async_pf.c', 'Documentation/virt/kvm/arm/x.rst',
             'tools/testing/selftests/kvm/aarch64/sdei.c']))
        # The SDEI client, the guest's arch code, shared headers: not
        # compiled in the host flavour, or not only there.
        for path in ('drivers/firmware/arm_sdei.c', 'arch/arm64/kernel/kvm.c',
                     'arch/arm64/include/asm/thread_info.h',
                     'include/linux/kvm_host.h', 'arch/arm64/Kconfig'):
            self.assertTrue(series.guest_side(
                ['arch/arm64/kvm/arm.c', path]), path)

    def test_part_marker(self):
        msg = 'subject\n\nbody\n\nSeries-part: prep\nSigned-off-by: x\n'
        self.assertEqual(series.PART_RE.search(msg).group(1), 'prep')

    def test_tree_diff(self):
        with tempfile.TemporaryDirectory() as a, \
                tempfile.TemporaryDirectory() as b:
            os.makedirs(os.path.join(a, '01-x'))
            os.makedirs(os.path.join(b, '01-x'))
            for d, text in ((a, '1'), (b, '2')):
                with open(os.path.join(d, '01-x', 'p.patch'), 'w') as f:
                    f.write(text)
            with open(os.path.join(a, '01-x', 'q.patch'), 'w') as f:
                f.write('q')
            diff = series._tree_diff(a, b)
            self.assertEqual(diff, ['  differs: 01-x/p.patch',
                                    '  only in the tree: 01-x/q.patch'])


class BaseTest(unittest.TestCase):
    """BASE=, the per-base files and the pinned version's fallback."""

    def test_each_base_has_its_files(self):
        for base, prof in common.BASES.items():
            self.assertEqual(sorted(prof['kvm_init']),
                             ['nvhe', 'protected', 'vhe'], base)
            self.assertTrue(os.path.exists(os.path.join(
                common.TOP, 'tests', f'kvm-selftests-{base}.list')), base)
        self.assertIn(common.DEFAULT_BASE, common.BASES)
        self.assertTrue(series.patch_files(os.path.join(
            common.TOP, 'patches', common.DEFAULT_BASE)))

    def test_kvm_init_lines_match_the_baseline(self):
        # The line each mode waits for is the one the bare base printed
        # (a 6.12 string given to 6.1 failed every protected-mode run).
        for base, prof in common.BASES.items():
            for mode, line in prof['kvm_init'].items():
                tap = os.path.join(common.RESULTS, 'baseline', base,
                                   f'{mode}.tap')
                if not os.path.exists(tap):
                    continue
                with open(tap) as f:
                    got = [ln for ln in f if ' kvm-init' in ln]
                self.assertEqual(len(got), 1, tap)
                self.assertTrue(got[0].rstrip('\n').endswith('# ' + line),
                                f'{base} {mode}: {got[0]!r} vs {line!r}')

    def test_unknown_base(self):
        with mock.patch.object(common, 'BASE', '5.10'):
            with self.assertRaisesRegex(common.Error, r"unknown base '5\.10'"
                                        r".*bases: 6\.1, 6\.12"):
                common.check_base()

    def test_tag_has_no_tilde(self):
        self.assertEqual(series.tag_for('6.12.118-1~deb12u1'),
                         'debian-6.12.118-1_deb12u1')
        self.assertEqual(series.tag_for('6.1.192-2'), 'debian-6.1.192-2')

    def test_newest_by_dpkg_order(self):
        self.assertEqual(deps.newest(['6.12.9-1', '6.12.118-1~deb12u1',
                                      '6.12.118-1~deb12u0']),
                         '6.12.118-1~deb12u1')

    def test_pinned_version_kept_while_available(self):
        with mock.patch.object(common, 'BASE_VERSION', '6.1.192-2'):
            self.assertEqual(deps.choose_version(['6.1.192-3', '6.1.192-2']),
                             '6.1.192-2')

    def test_pinned_version_gone_takes_newest_with_warning(self):
        env = {k: v for k, v in os.environ.items() if k != 'BASE_VERSION'}
        with mock.patch.object(common, 'BASE_VERSION', '6.1.192-2'), \
                mock.patch.dict(os.environ, env, clear=True), \
                mock.patch.object(deps, 'log') as log:
            got = deps.choose_version(['6.1.192-3', '6.1.193-1',
                                       '6.1.192-4'])
        self.assertEqual(got, '6.1.193-1')
        self.assertRegex(log.call_args[0][0],
                         r'^WARNING: the pinned linux-source-\S+ 6\.1\.192-2'
                         r' is no longer in the package index; taking the '
                         r'newest, 6\.1\.193-1')

    def test_version_asked_for_is_never_replaced(self):
        with mock.patch.object(common, 'BASE_VERSION', '6.1.100-1'), \
                mock.patch.dict(os.environ, {'BASE_VERSION': '6.1.100-1'}):
            with self.assertRaisesRegex(common.Error, r'6\.1\.100-1 is not '
                                        r'in the package index; available: '
                                        r'6\.1\.192-3, 6\.1\.192-2'):
                deps.choose_version(['6.1.192-3', '6.1.192-2'])

    def test_base_fragment_adds(self):
        with tempfile.TemporaryDirectory() as d:
            os.makedirs(os.path.join(d, '6.12'))
            for rel in ('host.config', '6.12/host.config', 'base.config'):
                open(os.path.join(d, rel), 'w').close()
            with mock.patch.object(kbuild, 'CONFIGS', d), \
                    mock.patch.object(kbuild, 'BASE', '6.12'):
                self.assertEqual(kbuild.fragments('host.config'),
                                 [os.path.join(d, 'host.config'),
                                  os.path.join(d, '6.12', 'host.config')])
                self.assertEqual(kbuild.fragments('base.config'),
                                 [os.path.join(d, 'base.config')])


if __name__ == '__main__':
    unittest.main()


class LockstatTest(unittest.TestCase):
    LOG = ('populate ...\nlockstat: begin\n'
           '                    &(kvm)->mmu_lock-W:             3'
           '              4           0.50          20.00          40.00'
           '          10.00            120            900           0.10'
           '          50.00        2000.00           2.22\n'
           '                      &kvm->mmu_lock-R:             1'
           '              2           1.00           3.00           4.00'
           '           2.00             80           5000           0.10'
           '          10.00         500.00           0.10\n'
           'lockstat: end\n')

    def test_parse(self):
        from harness import bench_stage2
        got = bench_stage2.parse_lockstat(self.LOG)
        self.assertEqual(got['W'], {'contentions': 4, 'wait_us': 40.0,
                                    'acquisitions': 900})
        self.assertEqual(got['R'], {'contentions': 2, 'wait_us': 4.0,
                                    'acquisitions': 5000})

    def test_write_only_class_and_missing_output(self):
        from harness import bench_stage2
        got = bench_stage2.parse_lockstat(
            'lockstat: begin\n      &kvm->mmu_lock:  0  7  1.0  2.0  9.5  '
            '1.3  0  70  0.1  1.0  5.0  0.1\nlockstat: end\n')
        self.assertEqual(got['W']['contentions'], 7)
        self.assertEqual(got['R']['acquisitions'], 0)
        with self.assertRaises(common.Error):
            bench_stage2.parse_lockstat('lockstat: begin\n')
        with self.assertRaises(common.Error):      # lock stats were off
            bench_stage2.parse_lockstat('lockstat: begin\nlockstat: end\n')


class BenchTest(unittest.TestCase):
    DLPT = ('Populate memory time: 4.250000000s\n'
            'Iteration 1 dirty memory time: 2.000000000s\n'
            'Iteration 2 dirty memory time: 1.000000000s\n')

    def test_parse(self):
        from harness import bench_stage2
        got = bench_stage2.parse_log(self.DLPT, 'dlpt')
        self.assertAlmostEqual(got['populate'], 4.25)
        self.assertAlmostEqual(got['dirty'], 1.5)
        with self.assertRaises(common.Error):
            bench_stage2.parse_log('Populate memory time: 1.0s\n', 'dlpt')

    def test_table_ratio_and_target(self):
        from harness import bench_stage2
        the_cases = [('dlpt-v2', 'dlpt', 2, '')]
        raw = [{'base': {'dlpt-v2': {'populate': b, 'dirty': 1.0}},
                'series': {'dlpt-v2': {'populate': s, 'dirty': 1.0}}}
               for b, s in ((10.0, 5.0), (12.0, 7.0), (11.0, 6.0))]
        lines, verdicts = bench_stage2.table(raw, the_cases,
                                             ['base', 'series'])
        self.assertEqual(verdicts, [('dlpt-v2', 'populate', 6.0 / 11.0,
                                     0.6, True)])
        self.assertIn('met', lines[1])

    def test_unmeasurable_only_for_missed_multi_vcpu(self):
        from harness import bench_stage2
        the_cases = [('dlpt-v2', 'dlpt', 2, ''), ('dlpt-v1', 'dlpt', 1, '')]
        raw = [{k: {c: {'populate': 1.0, 'dirty': 1.0} for c in
                    ('dlpt-v2', 'dlpt-v1')} for k in ('base', 'series')}]
        lines, verdicts = bench_stage2.table(raw, the_cases,
                                             ['base', 'series'],
                                             unmeasurable=True)
        got = {(n, m): ok for n, m, _, _, ok in verdicts}
        self.assertIsNone(got[('dlpt-v2', 'populate')])
        self.assertTrue(got[('dlpt-v1', 'populate')])     # 1.0 <= 1.03
        self.assertIn('not measurable on 2 cores', lines[1])
        _, verdicts = bench_stage2.table(raw, the_cases, ['base', 'series'])
        self.assertIs(verdicts[0][4], False)              # MISSED

    def test_apf_bench(self):
        from harness import bench_apf
        log = ''.join(f'async-pf-bench: delay {d} ms: on share 0.95{d} '
                      f'window {d * 9}.0 ms; off share 0.000 window '
                      f'{d * 8}.0 ms\n' for d in bench_apf.APF_DELAYS)
        got = bench_apf.parse_apf('x\n' + log)
        self.assertEqual(got[10], {'on': 0.9510, 'on_ms': 90.0,
                                   'off': 0.0, 'off_ms': 80.0})
        with self.assertRaisesRegex(common.Error, '50 ms'):
            bench_apf.parse_apf(log.split('\n', 2)[0] + '\n' +
                                log.split('\n', 2)[1] + '\n')
        low = dict(got)
        low[1] = dict(got[1], on=0.4)
        raw = [{'vhe': low, 'nvhe': got}]
        with mock.patch.object(bench_apf.vm, 'accel',
                               return_value=('', 'tcg')):
            report = bench_apf.apf_report(raw, 1, 2)
        self.assertRegex(report, r'vhe +1 ms +0.400 +0.000 .* MISSED')
        self.assertRegex(report, r'nvhe +50 ms +0.955 .* met')

    def test_sdei_latency(self):
        from harness import bench_sdei
        log = 'x\nsdei-latency: sdei_ns=1500 ppi_ns=1000 ratio=1.50\n'
        self.assertEqual(bench_sdei.parse_sdei_latency(log),
                         {'sdei_ns': 1500.0, 'ppi_ns': 1000.0})
        with self.assertRaises(common.Error):
            bench_sdei.parse_sdei_latency('no figures\n')
        raw = [{'vhe': {'sdei_ns': 1500.0, 'ppi_ns': 1000.0},
                'nvhe': {'sdei_ns': 4000.0, 'ppi_ns': 1000.0}}]
        with mock.patch.object(bench_sdei.vm, 'accel',
                               return_value=('', 'tcg')):
            report = bench_sdei.sdei_report(raw, 1, 2)
        self.assertRegex(report, r'vhe +1500 +1000 +1.50  met')
        self.assertRegex(report, r'nvhe +4000 +1000 +4.00  MISSED')

    def test_serialisation_gone(self):
        from harness import bench_stage2

        def lock(w):
            return {'W': {'contentions': w}, 'R': {'contentions': 0}}
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, 'ls.json')
            for base_w, series_w, want in ((1560, 0, True), (1560, 3, False),
                                           (0, 0, False)):
                with open(p, 'w') as f:
                    json.dump({'cases': [['ls-populate-v2', 'populate', 2]],
                               'rounds': [{'base': {'ls-populate-v2':
                                                    lock(base_w)},
                                           'series': {'ls-populate-v2':
                                                      lock(series_w)}}]}, f)
                self.assertIs(bench_stage2.serialisation_gone(p), want)
            self.assertFalse(bench_stage2.serialisation_gone(
                os.path.join(d, 'missing.json')))


class ApfGuestBenchTest(unittest.TestCase):
    """parse_apfg: the figures of one tests/apf-postcopy.sh run."""

    def write(self, d, src_secs, dst_secs, result):
        with open(os.path.join(d, 'result'), 'w') as f:
            f.write(result)
        for side, secs in (('src', src_secs), ('dst', dst_secs)):
            with open(os.path.join(d, f'console-{side}.log'), 'w') as f:
                f.write(''.join(f'apf-work: t={t} touched {tt} counted {c}\r\n'
                                for t, tt, c in secs))

    def test_share_and_blocktime(self):
        from harness import bench_apf
        with tempfile.TemporaryDirectory() as d:
            # switch during t=3 (the source printed up to t=2); the 10 s
            # from t=4 at half the end's rate
            self.write(d, [(1, 9, 100), (2, 9, 100)],
                       [(3, 9, 100)] + [(t, 1, 50) for t in range(4, 14)] +
                       [(t, 9, 100) for t in range(14, 31)],
                       'apf on\ncounted 2600\ntouched 200\n'
                       'postcopy_blocktime_ms 469\n'
                       'postcopy_vcpu_blocktime_ms 522,759\n'
                       'guest_parked -\n')
            fig = bench_apf.parse_apfg(d)
        self.assertAlmostEqual(fig['counter_share'], 0.5)
        self.assertEqual(fig['touched_after'], 10)
        self.assertEqual(fig['postcopy_vcpu_blocktime_ms'], 1281)
        self.assertEqual(fig['postcopy_blocktime_ms'], 469)
        self.assertNotIn('guest_parked', fig)      # "-": not measured

    def test_quiet_switch_from_l1(self):
        # -q: every second on the destination at the end, as sample
        # lines; the switch is the L1 side's switch_at (t=5), not the
        # source's last line (none)
        from harness import bench_apf
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, 'result'), 'w') as f:
                f.write('apf on\nswitch_at 5\n')
            secs = [(t, 9, 100) for t in range(1, 7)] + \
                [(t, 1, 25) for t in range(7, 17)] + \
                [(t, 9, 100) for t in range(17, 31)]
            with open(os.path.join(d, 'console-dst.log'), 'w') as f:
                f.write(''.join(f'apf-work: sample t={t} touched {tt} '
                                f'counted {c} at {t}.000\r\n'
                                for t, tt, c in secs))
            fig = bench_apf.parse_apfg(d)
        self.assertAlmostEqual(fig['counter_share'], 0.25)
        self.assertEqual(fig['touched_after'], 10)

    def test_too_short(self):
        from harness import bench_apf
        with tempfile.TemporaryDirectory() as d:
            self.write(d, [(1, 9, 100)], [], 'apf off\n')
            with self.assertRaises(common.Error):
                bench_apf.parse_apfg(d)


class ApfSwapBenchTest(unittest.TestCase):
    """parse_apfs_pair: the figures of one boot's tests/apf-swap.sh runs."""

    def write(self, d, secs, result, sample=True):
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, 'result'), 'w') as f:
            f.write(result)
        with open(os.path.join(d, 'console-vm.log'), 'w') as f:
            f.write(''.join(f'apf-work: {"sample " if sample else ""}t={t} '
                            f'touched {tt} counted {c} at {at:.3f}\r\n'
                            for t, tt, c, at in secs))

    def test_rates_use_the_times_printed(self):
        from harness import bench_apf
        with tempfile.TemporaryDirectory() as d:
            # 100 counts/s before the squeeze (at 5.5 s, 1 s long: seconds
            # 2-4 measured); the window starts after the first line at or
            # past 9.5 s: t=9, printed 3 s late at 10, and t=10 at once:
            # t=10..12 span t=9's time to t=12's, 4.01 s, with 198 counts
            # and 6 pages
            secs = [(t, 50, 100, t) for t in range(1, 6)]
            secs += [(6, 5, 10, 6), (7, 5, 10, 7), (8, 1, 30, 8),
                     (9, 0, 0, 10), (10, 0, 0, 10.01)]
            secs += [(t, 2, 66, 10.01 + (t - 10) * 2) for t in (11, 12)]
            secs[-1] = (12, 6, 198 - 66, 14.01)
            self.write(d, secs, 'apf on\nseconds 12\nsqueeze_at 5.50\n'
                       'squeeze_seconds 1.00\nguest_parked 5\n', False)
            fig = bench_apf.parse_apfs(d)
        self.assertAlmostEqual(fig['counter_share'], (198 / 4.01) / 100)
        self.assertAlmostEqual(fig['touched_rate'], 8 / 4.01)
        self.assertAlmostEqual(fig['work_rate'],
                               198 / 4.01 * 65536 + 8 / 4.01 * 64)
        self.assertAlmostEqual(fig['window_s'], 4.01)
        self.assertEqual(fig['guest_parked'], 5)

    def test_one_window_for_both_runs(self):
        # The off run's squeeze takes 10 s, the on run's 2: both are
        # measured from the off run's first second at or past 5 + 10 + 3
        # = 18 s, t=19..30; before t=19 every second is slow in both.
        from harness import bench_apf
        with tempfile.TemporaryDirectory() as d:
            dirs = {'on': os.path.join(d, 'on'), 'off': os.path.join(d, 'off')}
            for o, took, rate in (('on', 2, 300), ('off', 10, 50)):
                secs = [(t, 100, 100, t) for t in range(1, 6)]
                secs += [(t, 1, 1, t) for t in range(6, 19)]
                secs += [(t, 10, rate, t) for t in range(19, 31)]
                self.write(dirs[o], secs, f'apf {o}\nseconds 30\n'
                           f'squeeze_at 5.00\nsqueeze_seconds {took}.00\n')
            figs = bench_apf.parse_apfs_pair(dirs)
        for o, rate in (('on', 300), ('off', 50)):
            self.assertEqual(figs[o]['window_from'], 19)
            self.assertAlmostEqual(figs[o]['window_s'], 12)
            self.assertAlmostEqual(figs[o]['counted_rate'], rate)
            self.assertAlmostEqual(figs[o]['counter_share'], rate / 100)
            self.assertAlmostEqual(figs[o]['touched_rate_run'],
                                   (500 + 13 + 120) / 30)

    def test_before_stays_clear_of_the_squeeze(self):
        # Limit set 6.4 s after ready: second 6 (5-6 s) may already hold
        # the reclaim (L1's clock and apf-work's differ by up to a
        # second), so before is seconds 2-5 only
        from harness import bench_apf
        with tempfile.TemporaryDirectory() as d:
            secs = [(t, 100, 100, t) for t in range(1, 6)]
            secs += [(6, 1, 5, 6)] + [(t, 1, 80, t) for t in range(7, 21)]
            self.write(d, secs, 'apf on\nseconds 20\nsqueeze_at 6.40\n'
                       'squeeze_seconds 1.00\n')
            fig = bench_apf.parse_apfs(d)
        self.assertAlmostEqual(fig['counted_before'], 100)
        self.assertAlmostEqual(fig['counter_share'], 0.8)

    def test_l1_cpu_over_the_windows(self):
        # Ready at uptime 100.00, the limit at 6.0 s: before is 2-5 s
        # after ready, after (window from t=13) 12-20 s.  L1's two CPUs:
        # before, all busy, 1.5 of them in vCPU threads; after, 1.5 busy,
        # 1.0 in vCPU threads.  A sample that is not a line of four
        # numbers is left out.
        from harness import bench_apf
        with tempfile.TemporaryDirectory() as d:
            secs = [(t, 100, 100, t) for t in range(1, 21)]
            self.write(d, secs, 'apf on\nseconds 20\nsqueeze_at 6.00\n'
                       'squeeze_seconds 3.00\nready_uptime 100.00\n')
            busy = total = vcpu = 0
            lines = []
            for t in range(0, 23):
                lines.append(f'{100 + t}.00 {busy} {total} {vcpu}\n')
                b, v = (200, 150) if t < 6 else (150, 100)
                busy, total, vcpu = busy + b, total + 200, vcpu + v
            lines.insert(8, '107.50 x 1 2\n')
            with open(os.path.join(d, 'cpu-samples'), 'w') as f:
                f.write(''.join(lines) + '121.00 9')
            fig = bench_apf.parse_apfs(d)
        self.assertEqual(fig['window_from'], 13)
        self.assertAlmostEqual(fig['l1_vcpu_before'], 1.5)
        self.assertAlmostEqual(fig['l1_other_before'], 0.5)
        self.assertAlmostEqual(fig['l1_idle_before'], 0)
        self.assertAlmostEqual(fig['l1_vcpu_after'], 1.0)
        self.assertAlmostEqual(fig['l1_other_after'], 0.5)
        self.assertAlmostEqual(fig['l1_idle_after'], 0.5)

    def test_missing_squeeze(self):
        from harness import bench_apf
        with tempfile.TemporaryDirectory() as d:
            self.write(d, [(1, 9, 100, 1.0)], 'apf off\nseconds 1\n'
                       'squeeze_at -\n')
            with self.assertRaises(common.Error):
                bench_apf.parse_apfs(d)
