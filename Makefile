# Everyday targets for contributors (the README's two set-up commands need none of this).
# Each target works in whatever virtualenv is active; `make dev` first.
PYTHON ?= python
# The sanitizer runtimes the interpreter must load first when the extension is built with them.
ASAN_PRELOAD = $(shell gcc -print-file-name=libasan.so) $(shell gcc -print-file-name=libubsan.so)

.PHONY: help dev test test-pure test-c lint debug asan bench bench-full ci clean

help:
	@echo "make dev        editable install with the test, bench and lint extras (compiled backend)"
	@echo "make test       the whole suite, both backends (what CI runs after installing)"
	@echo "make test-pure  the suite on the pure-Python backend only"
	@echo "make test-c     the C unit tests of src_c/ alone (with and without assertions)"
	@echo "make lint       ruff and cython-lint, as CI runs them"
	@echo "make debug      rebuild with FASTSOCK_DEBUG=1 (C assertions, Cython bounds checks) and test"
	@echo "make asan       rebuild with AddressSanitizer + UBSan and run the suite on the compiled backend"
	@echo "make bench      fastsock bench --quick (the main job)"
	@echo "make fuzz       build the libFuzzer targets (tests/fuzz/) with clang, run each FUZZ_TIME s (600)"
	@echo "make ci         the whole CI script (.ci/run) on this checkout"

dev:
	$(PYTHON) -m pip install -e '.[test,bench,lint]'

test:
	$(PYTHON) -m pytest

test-pure:
	FASTSOCK_PURE=1 $(PYTHON) -m pytest --no-c-extensions

test-c:
	$(PYTHON) -m pytest tests/test_c_units.py -v

lint:
	ruff check .
	cython-lint fastsock/_c

debug:
	FASTSOCK_DEBUG=1 $(PYTHON) -m pip install -e . --no-build-isolation
	$(PYTHON) -m pytest -q

asan:
	$(PYTHON) -m pytest tests/test_c_units.py -q
	FASTSOCK_SANITIZE=address,undefined $(PYTHON) -m pip install -e . --no-build-isolation
	LD_PRELOAD="$(ASAN_PRELOAD)" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		$(PYTHON) -m pytest -q -p no:cacheprovider
	@echo "asan: done; rebuild normally with 'make dev'"

bench:
	fastsock bench --quick

bench-full:
	fastsock bench --repeat 3

# One target after the other (FUZZ_TIME seconds each) on its committed corpus; see tests/fuzz/run.sh.
FUZZ_TIME ?= 600
.PHONY: fuzz
fuzz:
	FUZZ_TIME=$(FUZZ_TIME) sh tests/fuzz/run.sh

ci:
	bash .ci/run

clean:
	rm -rf build dist *.egg-info .ci-venv-* .ci-build-* .ci-logs tests/c/build fastsock/_c/_speedups.c fastsock/_c/*.so fastsock/_c/*.html
