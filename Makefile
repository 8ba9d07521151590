# Each target creates .venv on first use. torch is installed first, pinned, from the CPU wheel, so that no
# resolver ever pulls a multi-GB CUDA build. `pip install edgesdk` alone is the torch-free runtime; demo and test
# need every extra. torchvision and timm (the standard architectures of edgesdk.zoo.standard) go in without their
# dependencies, so that nothing replaces the CPU torch.
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-0.1.0
BUILD   := build
CPP     := runtime/cpp/build

.PHONY: demo test bench lint setup clean cpp cpp-configure cpp-test ort-ops test-neon

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[export,train,diffusers,dev]'
	$(PY) -m pip install --quiet --no-deps torchvision==0.29.1 timm==1.0.31
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py --workdir $(BUILD)

# The suite runs in two pytest-xdist workers (a test file stays on one worker, with its module fixtures; files in the
# order tests/conftest.py gives them, the slowest first) while the C++ runtime builds beside them (niced: only ctest,
# after pytest, needs it, so it takes the cycles the workers leave); then ctest. The full-size bundles of
# tests/bundles.py are exported once per run, into TEST_BUNDLES (emptied first), for both workers and ctest's fixtures.
TEST_BUNDLES := $(abspath $(BUILD))/test-bundles

test: $(STAMP)
	rm -rf $(TEST_BUNDLES)
	mkdir -p $(BUILD)
	$(MAKE) ort-ops
	nice -n 10 $(MAKE) cpp > $(BUILD)/cpp-build.log 2>&1 & build=$$!; \
	EDGESDK_TEST_BUNDLES=$(TEST_BUNDLES) $(PY) -m pytest -q -rs -n 2 --dist loadfile --no-loadscope-reorder --durations=30; tests=$$?; \
	wait $$build || { cat $(BUILD)/cpp-build.log; exit 1; }; exit $$tests
	cd $(CPP) && EDGESDK_TEST_BUNDLES=$(TEST_BUNDLES) $(abspath $(VENV))/bin/ctest --output-on-failure -j2

# The C++ runtime (runtime/cpp): library, edgesdk-run and its tests, built against the executorch wheel's C++
# package with the venv's CMake (>= 3.28, from PyPI) and Ninja.
cpp: cpp-configure
	$(VENV)/bin/cmake --build $(CPP) -j2

cpp-configure: $(STAMP)
	$(VENV)/bin/cmake -S runtime/cpp -B $(CPP) -G Ninja -DCMAKE_MAKE_PROGRAM=$(abspath $(VENV))/bin/ninja \
		-DPython_EXECUTABLE=$(abspath $(PY))

# The ONNX Runtime op library alone (seconds; nothing where its headers cannot be had, see runtime/cpp/CMakeLists.txt):
# `make test` builds it before pytest starts, because the Python tests of BNN bundles on ONNX Runtime look for it when
# they are collected.
ort-ops: cpp-configure
	$(VENV)/bin/cmake --build $(CPP) --target ort_ops -j2

# ctest: unit tests, then the equivalence tests against the Python runtime (their fixture step writes the Python
# references into $(CPP)/fixtures once, over the shared test bundles of tests/bundles.py: those of
# $EDGESDK_TEST_BUNDLES when set, as `make test` sets it, else exported there).
cpp-test: cpp
	cd $(CPP) && $(abspath $(VENV))/bin/ctest --output-on-failure -j2

# The binary kernel's NEON path on this x86-64 machine: cross-compiled (aarch64-linux-gnu-g++, else Zig's clang from
# the ziglang wheel, installed here) and run under qemu-user (installed, else Debian's static build fetched once into
# $(CPP)/_deps, SHA-256 pinned). Not in `make test`: Zig's first build of the target's C++ library takes ~2.5 min.
test-neon: $(STAMP)
	command -v aarch64-linux-gnu-g++ >/dev/null || $(PY) -m pip install -q "ziglang==0.17.1"
	$(PY) runtime/cpp/tools/neon_test.py --build $(CPP)

bench: $(STAMP)
	$(PY) benchmarks/sampling.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(BUILD) .pytest_cache
