# The two commands of the README are `make serve` and `make test`; everything else supports them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PA_VENV := .tools/pa
EXAMPLES := examples/repository
STAMP := $(VENV)/.installed

.PHONY: serve test setup perf-analyzer examples completions lint typecheck unit integration bench fuzz soak gpu-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[onnx,torch,dev]"
	touch $(STAMP)

setup: $(STAMP)

# perf_analyzer 2.51 lives in its own venv (its pins clash with ours); see docs/PEERS.md.
perf-analyzer:
	@$(PYTHON) tests/tools/install_perf_analyzer.py $(PA_VENV)

examples: $(STAMP)
	$(PY) -m tritonctl.examples $(EXAMPLES)

# Regenerate completions/ after adding or changing commands (a unit test fails while they are stale).
completions: $(STAMP)
	$(PY) completions/generate.py

serve: examples
	$(VENV)/bin/tritonctl serve --model-repository $(EXAMPLES)

lint: $(STAMP)
	$(VENV)/bin/ruff check tritonctl server tests benchmarks docker
	$(VENV)/bin/ruff format --check tritonctl server tests benchmarks docker

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: $(STAMP) perf-analyzer lint typecheck
	$(PY) -m pytest -q

# Peers (real Triton, MLServer) install into .tools/ on first use; e.g. make bench BENCH_ARGS=--quick
bench: $(STAMP) perf-analyzer
	$(PY) -m benchmarks.peers $(BENCH_ARGS)

# Reliability (RELIABILITY.md): 100k+ hostile HTTP/gRPC requests with zero crashes; a steady-load soak
# with the RSS of the server and its workers sampled (10 minutes by default).
fuzz: $(STAMP)
	$(PY) -m benchmarks.fuzz_long --requests 100000 --json benchmarks/out/fuzz_long.json

soak: $(STAMP)
	$(PY) -m benchmarks.soak --json benchmarks/out/soak.json

# The GPU paths (ONNX CUDA EP, TorchScript on CUDA, a TensorRT engine built on the spot, two GPU
# groups, GPU metrics and per-device memory accounting); without a GPU it says so and exits 0.
gpu-check: $(STAMP)
	$(PY) -m benchmarks.gpu_check

clean:
	rm -rf $(VENV) .tools .mypy_cache .ruff_cache .pytest_cache
