# Everyday targets for contributors (the README's two set-up commands need none of this).
# Each target works in whatever virtualenv is active; `make dev` first.
PYTHON ?= python
# The sanitizer runtimes the interpreter must load first when the extension is built with them.
ASAN_PRELOAD = $(shell gcc -print-file-name=libasan.so) $(shell gcc -print-file-name=libubsan.so)

.PHONY: help dev test test-pure test-c lint debug asan asan-build asan-reports valgrind bench bench-full ci clean

help:
	@echo "make dev        editable install with the test, bench and lint extras (compiled backend)"
	@echo "make test       the whole suite, both backends (what CI runs after installing)"
	@echo "make test-pure  the suite on the pure-Python backend only"
	@echo "make test-c     the C unit tests of src_c/ alone (with and without assertions)"
	@echo "make lint       ruff and cython-lint, as CI runs them"
	@echo "make debug      rebuild with FASTSOCK_DEBUG=1 (C assertions, Cython bounds checks) and test"
	@echo "make asan       a copy built with AddressSanitizer + UBSan (build/asan): the whole suite, compiled backend"
	@echo "make valgrind   valgrind memcheck over the C unit tests: no invalid access, no definite leak"
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

# `make asan`: a copy of this checkout (build/asan/src: tracked files and untracked ones git
# does not ignore, as they are now, so uncommitted work is tested too; not .ci/run's copies) built in place with the
# sanitizers, then the WHOLE suite run in it on the compiled backend, the interpreter started
# with the runtimes preloaded. This checkout's own build is left alone (no `make dev` after).
#   PYTHONMALLOC=malloc  every Python object comes from malloc, so ASan's redzones also guard
#                        the objects and buffers the extension reads and writes (pymalloc's
#                        arenas are invisible to ASan)
#   allocator_may_return_null=1  a huge request gives MemoryError, as without ASan (the tests
#                        of "refused before allocation" and of MemoryError rely on it)
#   log_path             ASan's reports from every process (the tests' and their children:
#                        workers, example servers...) land in build/asan/logs. GCC's UBSan
#                        ignores log_path when ASan is loaded: its reports go to stderr, so
#                        pytest runs with --capture=sys (a report written to fd 2 reaches the
#                        log, build/asan/pytest.log, instead of a capture file lost when the
#                        process aborts); in a child, its halt makes the child die loudly
#   detect_leaks=0       CPython frees little at exit; leaks are checked by tests/test_leaks.py
#                        and `make valgrind`
# The run fails on a failed test or on any sanitizer report, even one from a process whose
# test passed. ASAN_PYTEST narrows the run (e.g. ASAN_PYTEST="tests/test_decoder.py");
# NICE="nice -n 19" lowers its priority; UBSAN_HALT=0 reports every UBSan finding of the run
# instead of stopping at the first (ASan always stops at its first).
ASAN_DIR = $(CURDIR)/build/asan
ASAN_PYTEST ?=
NICE ?=
UBSAN_HALT ?= 1
UBSAN_SUPP = $(CURDIR)/tests/sanitizers/ubsan.supp
# quarantine_size_mb=1: ASan keeps only 1 MiB of freed memory resident (default 256 MiB), so
# the RSS bounds of tests/test_server_scale.py hold under it too.
SANITIZER_ENV = LD_PRELOAD="$(ASAN_PRELOAD)" PYTHONMALLOC=malloc \
	ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1:abort_on_error=1:quarantine_size_mb=1:log_path=$(ASAN_DIR)/logs/asan \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=$(UBSAN_HALT):abort_on_error=1$(if $(wildcard $(UBSAN_SUPP)),:suppressions=$(UBSAN_SUPP))
# What a sanitizer report starts with.
SANITIZER_REPORT = 'runtime error:|ERROR: AddressSanitizer|SUMMARY: (Address|UndefinedBehavior)Sanitizer'

asan: asan-build
	@echo "== the suite under ASan + UBSan, compiled backend (log: build/asan/pytest.log)"
	(cd $(ASAN_DIR)/src && $(SANITIZER_ENV) $(NICE) $(PYTHON) -m pytest -q -p no:cacheprovider --backend c \
		--capture=sys --timeout 300 --durations 30 --junitxml=$(ASAN_DIR)/junit.xml $(ASAN_PYTEST); \
		echo $$? > $(ASAN_DIR)/status) 2>&1 | tee $(ASAN_DIR)/pytest.log
	@$(MAKE) --no-print-directory asan-reports && exit $$(cat $(ASAN_DIR)/status)

asan-build:
	rm -rf $(ASAN_DIR) && mkdir -p $(ASAN_DIR)/src $(ASAN_DIR)/logs
	git ls-files -z --cached --others --exclude-standard -- . ':(exclude).ci-*' | \
		xargs -0 sh -c 'for f; do [ -f "$$f" ] && printf "%s\0" "$$f"; done' sh | \
		xargs -0 cp --parents -t $(ASAN_DIR)/src
	cd $(ASAN_DIR)/src && FASTSOCK_SANITIZE=address,undefined $(NICE) $(PYTHON) setup.py -q build_ext --inplace
	@# The copy's fastsock is the one imported, and its extension carries the runtimes.
	cd $(ASAN_DIR)/src && $(SANITIZER_ENV) $(PYTHON) -c "import fastsock._c._speedups as m, sys; \
		assert m.__file__.startswith('$(ASAN_DIR)/src/'), m.__file__; print('sanitized build:', m.__file__)"
	ldd $(ASAN_DIR)/src/fastsock/_c/_speedups*.so | grep -E 'lib(a|ub)san'

# Any sanitizer report of the run (ASan's files, UBSan's lines in the log) fails it.
asan-reports:
	@if ls $(ASAN_DIR)/logs/* >/dev/null 2>&1; then \
		echo "== ASan reports in build/asan/logs:"; cat $(ASAN_DIR)/logs/*; exit 1; fi
	@if grep -E -n $(SANITIZER_REPORT) $(ASAN_DIR)/pytest.log; then \
		echo "== sanitizer reports in build/asan/pytest.log (above)"; exit 1; fi
	@echo "== no sanitizer report from any process"

# Valgrind memcheck over the C unit tests (tests/c/, built -O1 -g without ASan): no invalid
# read or write, no definite leak (tests/test_valgrind.py; skipped, saying why, without valgrind).
valgrind:
	$(PYTHON) -m pytest tests/test_valgrind.py -v -rs -p no:cacheprovider

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
