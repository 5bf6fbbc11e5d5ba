# Front door of the harness; every target is safe to rerun and skips work
# already done.  The work is in harness/ (python3 -m harness <command>).
#
#   make run            main job: build, boot the patched L1 host in VHE,
#                       nVHE and protected mode, show KVM and a guest
#   make test           the tests: the KVM selftests and L2 guest checks
#                       in every mode (entries marked "#only-in:" only in
#                       their modes; FULL=1: all), compared with
#                       results/baseline/<base>/
#   make baseline       the same test list on the unpatched base
#   make tree           build/linux = base + patches/ (FORCE=1 discards
#                       tree work that is not in patches/)
#   make export         write build/linux's series to patches/
#   make export-check   fail if patches/ and build/linux disagree
#   make check-series   checkpatch --strict each patch, build each prefix
#                       (FROM=PART: only the prefixes from that part on)
#   make defconfig-check  the user's recipe, arm64 defconfig with
#                       CONFIG_KVM_GUEST=y and =n: the directories the
#                       series changes (make defconfig-image: the whole
#                       Image, both ways)
#   make build          kernel Image and selftests only
#   make package        static selftests + runner for a real arm64 host
#   make list           the known test names
#   make bench          stage-2 fault benchmark, base against series:
#                       times and kvm->mmu_lock contention; SDEI delivery
#                       against a virtual PPI; async PF, the work of a
#                       second guest context while the first waits, on
#                       against off (ROUNDS=3, VCPUS="1 2 4", SMP=2 L1
#                       CPUs, BENCH_PARTS="time lockstat sdei apf
#                       apf-guest apf-swap"; results/bench/)
#   make check          the harness's own unit tests
#   make fresh-check    ./kvm-series test on a short subset in a new
#                       minimal Debian 12 root (FRESH_TESTS, FRESH_MODES)
#
# Variables: TESTS="a b" (subset of tests), MODES="vhe nvhe protected",
# FULL=1 (every list entry in every mode: entries marked "#only-in:"
# in the test list otherwise run only in the modes they name), BASE=6.12
# (the other base),
# BASE_VERSION (linux-source-6.1 version, default in harness/common.py),
# BOOT_TIMEOUT (seconds for L1 to reach its test script, default 300).

PY := python3 -m harness
export BASE TESTS MODES FULL BASE_VERSION BOOT_TIMEOUT ROUNDS VCPUS FRESH_TESTS \
	FROM FRESH_MODES SMP BENCH_PARTS APF_GUEST_FLAVOUR APF_SWAP_DELAY_MS \
	APF_SWAP_VCPUS

.PHONY: run test baseline deps tree export export-check check-series build \
	package list check bench fresh-check defconfig-check defconfig-image \
	kasan-test kcsan-test newest-check

UNITTESTS := python3 -m unittest discover -s harness -p 'test_*.py' -t .

# The packages first: some unit tests run the real QEMU.
test:
	@$(PY) deps
	@$(UNITTESTS)
	@$(PY) test

# The stage-2, Normal-NC, SDEI and async PF tests on a host kernel with
# generic KASAN (configs/kasan.config); TESTS= and MODES= as for test.
KASAN_TESTS := aarch64/stage2_fault_stress_test \
	aarch64/stage2_fault_stress_test_thp \
	aarch64/stage2_fault_stress_test_2m \
	aarch64/stage2_fault_stress_test_1g aarch64/stage2_table_leak_test \
	aarch64/vfio_normal_nc_test access_tracking_perf_test \
	kvm_page_table_test dirty_log_test \
	aarch64/sdei aarch64/sdei_fuzz aarch64/async_pf
kasan-test:
	@$(PY) deps
	@$(PY) test --flavour kasan --tests "$(or $(TESTS),$(KASAN_TESTS))"

# The async PF postcopy scenario with a KCSAN L2 guest kernel
# (configs/kcsan.config); TESTS= and MODES= as for test.
KCSAN_TESTS := guest-apf-postcopy
kcsan-test:
	@$(PY) deps
	@$(PY) test --guest-flavour guest-kcsan \
		--tests "$(or $(TESTS),$(KCSAN_TESTS))" \
		--modes "$(or $(MODES),vhe)"

run baseline package list bench:
	@$(PY) $@

deps export export-check check-series fresh-check newest-check:
	@$(PY) $@

defconfig-check:
	@$(PY) defconfig

defconfig-image:
	@$(PY) defconfig --full

tree:
	@$(PY) tree $(if $(FORCE),--force)

build:
	@$(PY) build

check:
	@$(UNITTESTS)
