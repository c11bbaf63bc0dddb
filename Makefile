# Two commands do all the set-up on a fresh machine:  `make run`  (dashboard)  and  `make test`  (suite).
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8501

.PHONY: run test bench zoo screenshot fashion-mnist clean-venv

$(VENV)/.installed: requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null
	$(PY) -m pip install -r requirements.txt
	touch $@

# Fashion-MNIST: $$LMCDASH_DATA, Debian's dataset-fashion-mnist, or a torchvision download.
fashion-mnist: $(VENV)/.installed
	@$(PY) -m lmcdash data check fashion-mnist 2>/dev/null || \
	 { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	   (apt-get install -y dataset-fashion-mnist || (apt-get update && apt-get install -y dataset-fashion-mnist)); } || \
	 $(PY) -m lmcdash data fetch fashion-mnist

run: $(VENV)/.installed fashion-mnist
	$(PY) -m streamlit run app.py --server.port $(PORT)

test: $(VENV)/.installed fashion-mnist
	$(PY) -m pytest -q

bench: $(VENV)/.installed fashion-mnist
	$(PY) -m lmcdash bench

zoo: $(VENV)/.installed fashion-mnist
	PYTHON=$(PY) bash checkpoints/retrain.sh

clean-venv:
	rm -rf $(VENV)

# Re-take docs/screenshot.png from the real zoo (widest MLP pair); also prints browser latencies as JSON.
screenshot: $(VENV)/.installed fashion-mnist
	PYTHONPATH=. $(PY) tests/browser_helpers.py --zoo checkpoints --family mlp1_wd3e-3 --width 32 --screenshot docs/screenshot.png
