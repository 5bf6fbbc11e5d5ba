"""SDEI delivery latency benchmark (make bench BENCH_PARTS=sdei)."""

import re
import statistics
import time

from . import vm
from .bench_common import run_series_only, save
from .common import TOP, Error, git

# SDEI delivery against a virtual PPI (aarch64/sdei_latency): the series
# only (the base has no SDEI), both measured in the same VM.
SDEI_EVENTS = 1000
SDEI_LAT = f'aarch64/sdei_latency -n {SDEI_EVENTS}'
SDEI_LINE = re.compile(r'sdei-latency: sdei_ns=([0-9.]+) ppi_ns=([0-9.]+)')
SDEI_MODES = ('vhe', 'nvhe')
SDEI_TARGET = 1.5


def parse_sdei_latency(text):
    """{'sdei_ns': .., 'ppi_ns': ..} from an aarch64/sdei_latency log."""
    m = SDEI_LINE.search(text)
    if not m:
        raise Error('aarch64/sdei_latency printed no "sdei-latency:" line')
    return {'sdei_ns': float(m.group(1)), 'ppi_ns': float(m.group(2))}


def sdei_report(raw, rounds, smp):
    lines = [
        'SDEI delivery latency against a virtual PPI, same VM, same run',
        f'date: {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}; '
        f'{rounds} rounds, each the median of {SDEI_EVENTS} events of each '
        f'kind; reported: the median over rounds',
        f'L1 host: QEMU {vm.accel()[1]}, -smp {smp}, perf flavour (no '
        'debug options); series '
        f'{git(["rev-parse", "--short", "HEAD"], cwd=TOP).stdout.strip()}',
        'SDEI = EVENT_SIGNAL to itself until the first instruction of the '
        'handler (guest virtual counter)',
        'PPI  = virtual timer armed with an expired compare value until the '
        "guest's IRQ handler (through the selftest library's vector)",
        f'target: SDEI at most {SDEI_TARGET}x the PPI',
        '',
        f'{"mode":6} {"SDEI ns":>10} {"PPI ns":>10} {"ratio":>7}  target',
    ]
    for mode in SDEI_MODES:
        s_ns = statistics.median(r[mode]['sdei_ns'] for r in raw)
        p_ns = statistics.median(r[mode]['ppi_ns'] for r in raw)
        ratio = s_ns / p_ns
        verdict = 'met' if ratio <= SDEI_TARGET else 'MISSED'
        lines.append(f'{mode:6} {s_ns:10.0f} {p_ns:10.0f} {ratio:7.2f}  '
                     f'{verdict}')
    return '\n'.join(lines) + '\n'


def run_sdei_latency(prepare, rounds, smp):
    raw = run_series_only(prepare, rounds, smp, 'sdei', 'sdei_latency',
                          SDEI_LAT, SDEI_MODES, parse_sdei_latency)
    save('sdei-latency', sdei_report(raw, rounds, smp), raw,
         [('sdei_latency', SDEI_LAT, mode) for mode in SDEI_MODES])
