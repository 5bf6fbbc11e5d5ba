"""Benchmarks (make bench): each part compares two things in the same run.

python3 -m harness bench runs the parts BENCH_PARTS names, through
run_bench; each part's module says what it measures and how:

  time, lockstat      bench_stage2.py  stage-2 faults, the series against
                                       the base: times; kvm->mmu_lock
                                       contention (/proc/lock_stat)
  sdei                bench_sdei.py    SDEI delivery against a virtual PPI
                                       (the series alone)
  apf, apf-guest,     bench_apf.py     async page faults, the service on
  apf-swap                             against off: the selftest; a guest
                                       postcopy-migrated; a guest whose
                                       QEMU is squeezed into swap

bench_common.py holds what they share (boots, rounds, saving results).
Results go to results/bench/ (another base's to results/bench/<base>/).
"""

from .bench_apf import run_apf, run_apf_guest, run_apf_swap
from .bench_sdei import run_sdei_latency
from .bench_stage2 import run_lockstat, run_time


def run_bench(prepare, rounds, vcpus, smp=2, parts=('time', 'lockstat')):
    # Lock figures first: the times' report reads them.
    if 'lockstat' in parts:
        run_lockstat(prepare, rounds, vcpus, smp)
    if 'time' in parts:
        run_time(prepare, rounds, vcpus, smp)
    if 'sdei' in parts:
        run_sdei_latency(prepare, rounds, smp)
    if 'apf' in parts:
        run_apf(prepare, rounds, smp)
    if 'apf-guest' in parts:
        run_apf_guest(prepare, rounds, smp)
    if 'apf-swap' in parts:
        run_apf_swap(prepare, rounds, smp)
    return 0
