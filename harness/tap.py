"""TAP results: parse the runner's output, add the L0 checks, summarise."""

import glob
import os
import re

from .common import BASELINE, TOP

RESULT_RE = re.compile(r'^(not ok|ok) (\d+) (\S+)(?: # ?(.*))?$')
KLINE_RE = re.compile(r'^\[\s*\d+\.\d+\]')
PATTERNS = os.path.join(TOP, 'tests', 'splat-patterns')


def is_result(line):
    return bool(RESULT_RE.match(line))


def parse(text):
    """[(name, status, detail)] with status 'ok', 'fail' or 'skip'."""
    out = []
    for line in text.splitlines():
        m = RESULT_RE.match(line.strip())
        if not m:
            continue
        detail = m.group(4) or ''
        if m.group(1) == 'not ok':
            status = 'fail'
        elif detail.upper().startswith('SKIP'):
            status = 'skip'
        else:
            status = 'ok'
        out.append((m.group(3), status, detail))
    return out


def splat_patterns():
    with open(PATTERNS) as f:
        return [re.compile(p.strip()) for p in f
                if p.strip() and not p.startswith('#')]


def find_splats(text, patterns=None):
    """Kernel log lines (printk-timestamped) that match a splat pattern."""
    patterns = patterns or splat_patterns()
    hits = []
    for line in text.splitlines():
        line = line.rstrip('\r')
        if not KLINE_RE.match(line):
            continue
        if any(p.search(line) for p in patterns):
            hits.append(line)
    return hits


def _read(path):
    try:
        with open(path, 'rb') as f:
            return f.read().decode('utf-8', 'replace')
    except OSError:
        return ''


class ModeResult:
    def __init__(self, mode, results, rundir, took):
        self.mode = mode
        self.results = results      # [(name, status, detail)]
        self.rundir = rundir
        self.took = took

    def counts(self):
        c = {'ok': 0, 'fail': 0, 'skip': 0}
        for _, status, _ in self.results:
            c[status] += 1
        return c

    def tap(self):
        lines = ['TAP version 13', f'1..{len(self.results)}']
        for i, (name, status, detail) in enumerate(self.results, 1):
            word = 'not ok' if status == 'fail' else 'ok'
            lines.append(f'{word} {i} {name}' + (f' # {detail}'
                                                  if detail else ''))
        return '\n'.join(lines) + '\n'


GUEST = 'guest'                 # the test list's L2 guest entry
GUEST_LOGS = os.path.join('logs', 'guest')


def is_guest(name):
    """L2 guest entries: guest, and guest-<scenario> (apf-postcopy.sh)."""
    return name == GUEST or name.startswith(GUEST + '-')


def guest_consoles(rundir):
    """Every L2 console log of a run: logs/guest*/console*.log."""
    return sorted(glob.glob(os.path.join(rundir, 'logs', GUEST + '*',
                                         'console*.log')))


def expand_guest(tests, rundir):
    """Each L2 guest entry replaced by one result per guest check.

    run-guest.sh writes logs/guest/checks.tap (apf-postcopy.sh, say,
    logs/<entry>/checks.tap); each line becomes <entry>/<check>.  Paths
    in it are L1's (/results/...): they are given as this machine's.  If
    the entry failed with no failing check (the runner's own timeout,
    say), the entry's failure is kept.
    """
    out = []
    for name, status, detail in tests:
        if not is_guest(name):
            out.append((name, status, detail))
            continue
        gdir = os.path.join(rundir, 'logs', name)
        checks = [(f'{name}/{n}', st,
                   d.replace('/results/', os.path.relpath(rundir, TOP) + '/'))
                  for n, st, d in parse(_read(os.path.join(gdir,
                                                           'checks.tap')))]
        out += checks
        if status == 'fail' and all(st != 'fail' for _, st, _ in checks):
            out.append((name, status, detail + '; see ' + os.path.relpath(
                os.path.join(gdir, 'console.log'), TOP)))
    return out


def mode_result(mode, rundir, expect, killed, took, init_time):
    console = _read(os.path.join(rundir, 'console.log'))
    rel = os.path.relpath(os.path.join(rundir, 'console.log'), TOP)
    results = []
    if init_time is None:
        why = killed or 'QEMU exited before the test script started'
        results.append(('boot', 'fail', f'{why}; console log: {rel}'))
    else:
        results.append(('boot', 'ok', f'{init_time:.0f}s to the test '
                                       'script'))
    if expect in console:
        results.append(('kvm-init', 'ok', expect))
    else:
        results.append(('kvm-init', 'fail', f'"{expect}" not in {rel}'))
    req = _read(os.path.join(rundir, 'request')).split()
    tests = [r for r in parse(_read(os.path.join(rundir, 'results.tap')))
             if r[0] != 'kernel-log']
    seen = {r[0] for r in tests}
    results += expand_guest(tests, rundir)
    for name in req:
        if name not in seen and init_time is not None:
            results.append((name, 'fail', 'no result: ' +
                            (killed or 'the runner stopped early') +
                            f'; see {rel}'))
    if not req and init_time is not None and not tests:
        results.append(('runner', 'fail', f'no test results; see {rel}'))
    # Both levels: L1's console and dmesg, the L2 guest's console (which
    # ends with the guest's dmesg).
    splats = find_splats('\n'.join(
        [console, _read(os.path.join(rundir, 'dmesg.txt'))] +
        [_read(p) for p in guest_consoles(rundir)]))
    if splats:
        uniq = list(dict.fromkeys(splats))
        results.append(('kernel-log', 'fail', f'{len(uniq)} splat line(s), '
                        f'first: {uniq[0][:160]}'))
    else:
        results.append(('kernel-log', 'ok', ''))
    return ModeResult(mode, results, rundir, took)


def load_baseline(mode, where=None, details=False):
    path = os.path.join(where or BASELINE, f'{mode}.tap')
    if not os.path.exists(path):
        return None
    return {n: (s, d) if details else s for n, s, d in parse(_read(path))}


def baseline_origin(mode, where=None):
    """The base tag a recorded baseline names in its first line ("#
    unpatched base <tag>, <mode> mode, ..."), or None."""
    path = os.path.join(where or BASELINE, f'{mode}.tap')
    if not os.path.exists(path):
        return None
    m = re.match(r'# unpatched base (\S+?),', _read(path))
    return m.group(1) if m else None


def _failure_kind(detail):
    """'exit N' or 'TIMEOUT' for a test that ended; None for one that did
    not (L1 killed, runner stopped, binary missing)."""
    m = re.match(r'(exit \d+|TIMEOUT)\b', detail)
    return m.group(1) if m else None


def known_failure(name, mode, detail, rundir, base_fails, baseline):
    """Is this failure the one the list's "#base-fails:" mark expects?

    Only if the mark names the mode, the recorded baseline of that mode
    failed the test too and in the same way (the same exit code, or a
    timeout for a timeout), the test ended (not "no result"), and the
    mark's signature, if it has one, is in the test's log.
    """
    modes, sig = (base_fails or {}).get(name, ([], ''))
    if mode not in modes or not baseline or name not in baseline:
        return False
    b_status, b_detail = baseline[name]
    kind = _failure_kind(detail)
    if b_status != 'fail' or not kind or kind != _failure_kind(b_detail):
        return False
    if sig:
        log = os.path.join(rundir, 'logs', name.replace('/', '_') + '.log')
        return sig in _read(log)
    return True


def summary(mode_results, baseline_dir=None, title=None, base_fails=None,
            base_tag=None):
    """Print the combined TAP, the table with the baseline; return counts.

    With a title (the baseline run itself) the table is not compared with
    results/baseline/<base>/ and is headed by the title instead.
    base_fails ({name: [modes]}, the list's "#base-fails:" marks): a
    failure so marked whose baseline in that mode is a failure too is
    TAP "not ok ... # TODO" and counted as 'todo', not as 'fail'.
    base_tag (the tag of this run's base): a baseline recorded on another
    base version is named as such under the table.
    """
    where = baseline_dir or BASELINE
    full = {m.mode: None if title else
            load_baseline(m.mode, baseline_dir, details=True)
            for m in mode_results}
    bases = {mode: None if b is None else {n: sd[0] for n, sd in b.items()}
             for mode, b in full.items()}
    lines = ['TAP version 13']
    total = sum(len(m.results) for m in mode_results)
    lines.append(f'1..{total}')
    i = 0
    todo = set()
    for m in mode_results:
        for name, status, detail in m.results:
            i += 1
            word = 'not ok' if status == 'fail' else 'ok'
            if status == 'fail' and known_failure(
                    name, m.mode, detail, m.rundir, base_fails,
                    full[m.mode]):
                todo.add((m.mode, name))
                detail = ('TODO fails on the bare base too, the same way ('
                          f'{os.path.relpath(where, TOP)}/{m.mode}.tap)'
                          + (f': {detail}' if detail else ''))
            d = f' # {detail}' if detail else ''
            lines.append(f'{word} {i} {m.mode}/{name}{d}')
    print('\n'.join(lines))
    names = []
    for m in mode_results:
        for n, _, _ in m.results:
            if n not in names:
                names.append(n)
    width = max([len(n) for n in names] + [10])
    print(f'\nSummary ({title}):' if title else
          '\nSummary (series; "was X" = result on the unpatched base, '
          f'{os.path.relpath(BASELINE, TOP)}/):')
    print(f'  {"test":<{width}}  ' + '  '.join(f'{m.mode:<20}'
                                             for m in mode_results))
    changed = []
    for n in names:
        cells = []
        for m in mode_results:
            got = {r[0]: r[1] for r in m.results}.get(n, '-')
            base = (bases[m.mode] or {}).get(n)
            cell = got
            if got == '-':
                pass                # not run in this mode ("#only-in:")
            elif (m.mode, n) in todo:
                cell += ' (todo)'   # as on the base ("#base-fails:")
            elif base is not None and base != got:
                cell += f' (was {base})'
                changed.append(f'{m.mode}/{n}: {base} -> {got}')
            elif base is None and bases[m.mode] is not None:
                cell += ' (new)'
            cells.append(f'{cell:<20}')
        print(f'  {n:<{width}}  ' + '  '.join(cells))
    missing = [m.mode for m in mode_results if bases[m.mode] is None]
    if missing and not title:
        print(f'  (no baseline for {", ".join(missing)}: run make baseline)')
    other = {m.mode: baseline_origin(m.mode, baseline_dir)
             for m in mode_results if bases[m.mode] is not None}
    other = {mode: t for mode, t in other.items()
             if base_tag and not title and t != base_tag}
    if other:
        print(f'  (baseline of {", ".join(sorted(other))} recorded on '
              f'{", ".join(sorted({str(t) for t in other.values()}))}, '
              f'not on this run\'s base {base_tag}: "was" and the '
              '"#base-fails:" TODOs compare two bases; make baseline '
              'records this one)')
    if changed:
        print('Changed from the baseline:\n  ' + '\n  '.join(changed))
    c = {'ok': 0, 'fail': 0, 'skip': 0}
    for m in mode_results:
        for k, v in m.counts().items():
            c[k] += v
    c['fail'] -= len(todo)
    c['todo'] = len(todo)
    line = f'{c["ok"]} passed, {c["fail"]} failed'
    if c['skip']:
        line += f', {c["skip"]} skipped'
    if todo:
        line += (f', {len(todo)} failed as on the bare base ("#base-fails:", '
                 'TAP TODO: not counted)')
    print(line)
    return c
