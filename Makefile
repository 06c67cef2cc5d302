# SPDX-License-Identifier: GPL-2.0
#
# virtio-msg for Linux 7.2, in Rust: build, boot and test.
#
#   make            provision what is missing, build the guest kernel and
#                   our modules (build/out/), and the test initramfs
#   make run        the demo: the guest with our modules driving an entropy,
#                   a block, a console and a network device served by the
#                   emulator; shell on this terminal (leave with
#                   "reboot -f"; needs root for the TAP interface)
#   make check      every test suite; ends with "check: N passed, N failed"
#
#   make kunit      KUnit suites (kunit.py run --arch=x86_64, a kernel of
#                   its own); make kunit-guest runs them in the guest
#                   kernel "make" built, as make check does
#   make cargo-test cargo tests of tools/virtio-msg
#   make emulator   build virtio-msg-emulator (release), the AMP PCI device
#                   served to QEMU over vfio-user (boot.sh --emulator)
#   make fuzz       fuzz the wire codec for FUZZ_RUNS inputs
#   make e2e        QEMU end-to-end tests (E2E="test ..." to pick some;
#                   E2E_JOBS guests at a time, default 2)
#   make kasan      the KASAN variant of the guest kernel (build/out-kasan/,
#                   built with clang)
#   make e2e-kasan  the fault tests (guest/fault_*.sh) in the KASAN guest
#   make bench      benchmark, not a test: virtio-msg against virtio-pci in
#                   one guest, on a kernel without the test guest's debug
#                   options (build/out-bench/, built once and kept); prints a
#                   table, writes build/bench/results.json and results.svg
#                   (needs root for the TAP interfaces)
#   make lint       rustfmt check, clippy on the kernel code and the tools
#   make series     the overlay as a git format-patch series against the
#                   pristine tree, with a cover letter (build/series/)
#   make series-check  the series applies with git am, builds after every
#                   patch, is checkpatch --strict clean, rustdoc warns not
#   make provision  only the host set-up (idempotent; never upgrades)
#   make clean      remove build/ (the caches in VMSG_CACHE stay)
#
# See README.md for what each step does and where things end up.

SHELL := /bin/bash
TOP := $(CURDIR)
OUT := $(TOP)/build/out
TOOLS := $(TOP)/tools/virtio-msg
FUZZ := $(TOOLS)/wire/fuzz
FUZZ_RUNS ?= 1000000
FUZZ_TARGET := x86_64-unknown-linux-gnu
# Coverage instrumentation for libFuzzer, with stable rustc (what
# cargo-fuzz passes, minus the sanitizer).
FUZZ_RUSTFLAGS := -Cpasses=sancov-module \
	-Cllvm-args=-sanitizer-coverage-level=4 \
	-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
	-Cllvm-args=-sanitizer-coverage-pc-table \
	-Cllvm-args=-sanitizer-coverage-trace-compares \
	--cfg fuzzing

.PHONY: all provision kernel initramfs emulator run kunit kunit-guest cargo-test fuzz e2e kasan e2e-kasan bench-kernel bench check lint series series-check clean

all: kernel initramfs emulator

provision:
	@support/provision.sh

kernel: provision
	@support/kernel.sh build

initramfs: kernel
	@tools/testing/virtio-msg/mkinitramfs.sh $(OUT)/initramfs.cpio.gz $(wildcard $(OUT)/modules/*.ko)
	@echo "initramfs: $(OUT)/initramfs.cpio.gz"

emulator: provision
	cd $(TOOLS) && cargo build --release -p virtio-msg-emulator

run: all
	@tools/testing/virtio-msg/run-demo.sh

kunit: provision
	@support/kunit.sh

kunit-guest: kernel initramfs
	@support/kunit.sh guest

cargo-test:
	cd $(TOOLS) && cargo test --release

fuzz:
	cd $(FUZZ) && RUSTFLAGS="$(FUZZ_RUSTFLAGS)" cargo build --release --target $(FUZZ_TARGET) --bin decode
	rm -rf $(TOP)/build/fuzz && mkdir -p $(TOP)/build/fuzz/corpus
	cd $(TOOLS) && cargo run --release --quiet --example fuzz_seeds -- $(TOP)/build/fuzz/corpus
	$(FUZZ)/target/$(FUZZ_TARGET)/release/decode -runs=$(FUZZ_RUNS) -max_len=128 \
		-artifact_prefix=$(TOP)/build/fuzz/ $(TOP)/build/fuzz/corpus 2>&1 | \
		grep -vE '^#[0-9]+\s+(NEW|REDUCE|pulse)'; exit $${PIPESTATUS[0]}

e2e: all
	@tools/testing/virtio-msg/e2e.sh $(E2E)

KASAN_OUT := $(TOP)/build/out-kasan
E2E_KASAN ?= $(basename $(notdir $(shell grep -l '^# e2e-kasan: ' tools/testing/virtio-msg/guest/*.sh)))

# variant_kernel VARIANT,OUT: the guest kernel of VMSG_VARIANT=VARIANT (see
# support/kernel.sh) and its initramfs, in OUT.
define variant_kernel
	@VMSG_VARIANT=$(1) support/kernel.sh build
	@tools/testing/virtio-msg/mkinitramfs.sh $(2)/initramfs.cpio.gz $(2)/modules/*.ko
	@echo "initramfs: $(2)/initramfs.cpio.gz"
endef

kasan: provision
	$(call variant_kernel,kasan,$(KASAN_OUT))

e2e-kasan: kasan emulator
	@VMSG_VARIANT=kasan tools/testing/virtio-msg/e2e.sh $(E2E_KASAN)

BENCH_OUT := $(TOP)/build/out-bench

# The benchmark guest: the test guest's kernel without its debug options.
bench-kernel: provision
	$(call variant_kernel,bench,$(BENCH_OUT))

bench: bench-kernel emulator
	@VMSG_VARIANT=bench support/bench.sh

check:
	@support/check.sh

series: provision
	@support/series.sh write

series-check: provision
	@support/series.sh check

lint:
	@support/lint.sh

clean:
	rm -rf build
