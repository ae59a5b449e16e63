# `make train` and `make test` create a local virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/lunar.py

.PHONY: install train test benchmark clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[train,test,pixels,video,sweep,anakin,mujoco,results]"
	# gymnax declares gymnasium<1.4 yet works with 1.4 (see pyproject.toml).
	$(PY) -m pip install --quiet -c constraints.txt --no-deps gymnax
	touch $@

install: $(VENV)/.installed

train: install
	$(PY) scripts/train.py --config $(CONFIG)

test: install
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder tests

clean:
	rm -rf $(VENV) runs .pytest_cache
