# Two entry points for people: `make run` and `make test`. Both build .venv first.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

FUZZ_STAMP := $(VENV)/.installed-fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= framer header hl7 fhir

.PHONY: run test check typecheck lint bench fuzz clean

# The modules of mypyc-modules.txt are compiled with mypyc (docs/development.md, "Compiled
# modules"), next to their sources; an edit of one rebuilds them, since a compiled module
# shadows its .py. OVERREAD_MYPYC=0: pure Python (and any built ones removed).
COMPILED := $(VENV)/.compiled
COMPILED_SOURCES := mypyc-modules.txt $(wildcard $(shell sed 's/\#.*//' mypyc-modules.txt))
# One line after each build: compiled or pure Python (pip --quiet hides setup.py's own line).
SAY_COMPILED = @$(BIN)/python -c "import listener.pipeline as m; print('overread: pipeline modules', 'compiled (mypyc)' if m.__file__.endswith('.so') else 'in pure Python (docs/development.md, Compiled modules)')"

# The install is pure Python; the $(COMPILED) rule compiles the listed modules in place, once.
$(STAMP): setup.cfg setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	OVERREAD_MYPYC=0 $(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

$(COMPILED): $(STAMP) $(COMPILED_SOURCES)
	@echo "overread: $(if $(filter 0,$(OVERREAD_MYPYC)),pure Python (OVERREAD_MYPYC=0),compiling the pipeline with mypyc: 3-4 minutes on 2 cores (OVERREAD_MYPYC=0 skips it))"
	$(BIN)/python setup.py --quiet build_ext --inplace
	touch $(COMPILED)
	$(SAY_COMPILED)

# The group's shared library (overread__mypyc) sits at the top of the checkout, outside listener/,
# where the editable install's finder (it maps only the package) does not look: the .pth file puts
# the checkout on the venv's path, so the `overread` command finds it from any directory
# (tests/integration/test_console_script.py). Its own stamp, so a venv built before it gets it too.
ON_PATH := $(VENV)/.checkout-on-path
$(ON_PATH): $(STAMP)
	$(BIN)/python -c "import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()['purelib'], 'overread-checkout.pth').write_text('$(CURDIR)\n')"
	touch $(ON_PATH)

# CONFIG=overread.yaml: start with that configuration (e.g. http_clients for the web console).
# ARGS='...': more options for `overread serve`, e.g. other ports when 2575 or 8080 is taken:
# ARGS='--mllp tcp:2576:interface=127.0.0.1 --http tcp:8081:interface=127.0.0.1'.
run: $(COMPILED) $(ON_PATH)
	$(BIN)/overread serve $(if $(CONFIG),--config $(CONFIG)) $(ARGS)

# The suite on TEST_WORKERS processes (pytest-xdist); each test file stays on one worker,
# since the examples test and the daemon tests share one daemon per file. TEST_WORKERS=0: serial.
# Three on a 2-core machine: many daemon tests wait (the 2-minute RIS outage, kill -9 and restart),
# so a third worker fills the cores they leave idle (docs/development.md, "Running the suite").
TEST_WORKERS ?= 3

test: $(COMPILED) $(ON_PATH)
	$(BIN)/python -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

# The report samples through the offline pipeline. Several carry a defect on purpose, so exit
# status 1 (a finding of severity error) is their expected result; 2 (cannot decode) fails.
# samples/scores/ holds peer-review scores, not reports: not checked.
check: $(COMPILED) $(ON_PATH)
	$(BIN)/overread check --format text samples/hl7 samples/fhir || [ $$? -eq 1 ]

typecheck: $(STAMP)
	$(BIN)/python -m mypy

# ruff: lint rules and the format check, configured in pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

$(FUZZ_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,fuzz]'
	touch $(FUZZ_STAMP)

# Coverage-guided fuzzing (atheris), FUZZ_SECONDS per target; see fuzz/README.md.
fuzz: $(FUZZ_STAMP)
	@mkdir -p var/fuzz
	@for t in $(FUZZ_TARGETS); do \
		echo "fuzz $$t ($(FUZZ_SECONDS)s, log var/fuzz/$$t.log)"; \
		$(BIN)/python fuzz/run.py $$t $(FUZZ_SECONDS) 2>var/fuzz/$$t.log || { tail -40 var/fuzz/$$t.log; exit 1; }; \
		grep -E "^Done" var/fuzz/$$t.log; \
	done

bench: $(COMPILED) $(ON_PATH)
	$(BIN)/python bench/decode.py

clean:
	rm -rf $(VENV) build *.egg-info
	find listener -name '*.so' -delete
	rm -f overread__mypyc.*.so
