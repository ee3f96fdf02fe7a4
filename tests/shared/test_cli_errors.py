"""Every CLI, tried with the mistakes a user makes: output = input (or inside it), outputs that cannot be written,
an image whose header promises 100000² pixels, frames of different sizes, wrong-typed or unknown config values.
Each one ends with exit code 2, exactly one ``error:`` line, no traceback — with the inputs byte-for-byte
unchanged and nothing half-written. And the data-loss cases that must succeed: an existing output folder keeps
what the run did not write; a folder with one corrupt file finishes the others."""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from shared.io import write_image, write_video
from tests.helpers import run_cli

pytestmark = pytest.mark.slow

UNTRAINED = {
    "cajnn": ["model=tiny", "allow_untrained=true"],
    "hime": ["model=tiny", "allow_untrained=true", "infer_options.face_crop=never"],
    "zsm": ["model=tiny", "allow_untrained=true"],
    "facealign": ["model=tiny", "allow_untrained=true", "infer_options.box=[0,0,40,40]"],
    "faceset": ["model=tiny", "allow_untrained=true", "infer_options.align=false"],
    "printdefect": ["allow_untrained=true"],
}


def huge_png(path: Path) -> None:
    """A valid PNG header declaring 100000×100000 RGB pixels, with almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Small real-looking inputs of every kind the CLIs take (images, folders, a video, frame folders)."""
    from skimage import data as skdata

    root = tmp_path_factory.mktemp("media")
    photo = skdata.astronaut()[::8, ::8][:48, :48]  # 48×48 real photo
    write_image(root / "img.png", photo)
    for name in ("a", "b"):
        write_image(root / "imgs" / f"{name}.png", photo)
    write_image(root / "imgs_bad" / "a.png", photo)
    (root / "imgs_bad" / "z.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    huge_png(root / "huge.png")
    (root / "huge_dir").mkdir()
    huge_png(root / "huge_dir" / "x.png")
    frames = [np.roll(photo[:24, :32], 2 * i, axis=1) for i in range(4)]
    write_video(root / "clip.mp4", frames, fps=10)
    for i, f in enumerate(frames[:3]):
        write_image(root / "frames" / f"{i:03d}.png", f)
    write_image(root / "frames_mixed" / "000.png", frames[0])
    write_image(root / "frames_mixed" / "001.png", photo[:24, :40])
    write_image(root / "frames_huge" / "000.png", frames[0])
    huge_png(root / "frames_huge" / "001.png")
    (root / "a_file").write_text("not a folder")
    return root


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def check_refused(res, message: str, media: Path, before: dict[str, str], output: Path | None) -> None:
    assert res.returncode == 2, res.stderr[-2000:]
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert snapshot(media) == before  # inputs unchanged, nothing written among them (no temp files either)
    if output is not None and not output.is_relative_to(media):
        assert not output.exists(), output


# (project, input, output, extra args, message); paths are relative to the media folder unless absolute
INFER_CASES = [
    ("cajnn", "img.png", "img.png", [], "is the input itself"),
    ("hime", "img.png", "img.png", [], "is the input itself"),
    ("facealign", "img.png", "img.png", [], "is the input itself"),
    ("facealign", "clip.mp4", "clip.mp4", [], "is the input itself"),
    ("zsm", "clip.mp4", "clip.mp4", [], "is the input itself"),
    ("zsm", "frames", "frames", [], "is the input itself"),
    ("printdefect", "imgs", "imgs", [], "is the input itself"),
    ("faceset", "imgs", "imgs", ["probe=img.png"], "is the input itself"),
    ("faceset", "imgs", "img.png", ["probe=img.png"], "is the input itself"),  # the probe is an input too
    ("cajnn", "imgs", "imgs/sr", [], "inside the input folder"),
    ("zsm", "frames", "frames/out", [], "inside the input folder"),
    ("cajnn", "img.png", "a_file/out.png", [], "a_file is a file, not a folder"),
    ("hime", "img.png", "a_file/out.png", [], "a_file is a file, not a folder"),
    ("zsm", "clip.mp4", "a_file/x/out.mp4", [], "a_file is a file, not a folder"),
    ("facealign", "img.png", "a_file/out.png", [], "a_file is a file, not a folder"),
    ("faceset", "imgs", "a_file/m.json", ["probe=img.png"], "a_file is a file, not a folder"),
    ("printdefect", "imgs", "a_file/out", [], "a_file is a file, not a folder"),
    ("cajnn", "img.png", "/proc/no_such_dir/out.png", [], "cannot create files in /proc"),
    ("zsm", "clip.mp4", "/proc/out.mp4", [], "cannot create files in /proc"),
    ("cajnn", "huge.png", "OUT/sr.png", [], "declares more pixels than the decoder accepts"),
    ("hime", "huge.png", "OUT/sr.png", [], "declares more pixels than the decoder accepts"),
    ("facealign", "huge.png", "OUT/lm.png", [], "declares more pixels than the decoder accepts"),
    ("faceset", "huge_dir", "OUT/m.json", ["probe=img.png"], "declares more pixels than the decoder accepts"),
    ("zsm", "frames_huge", "OUT/zsm", [], "exceeds limit"),
    ("zsm", "frames_mixed", "OUT/zsm", [], "all frames of a folder must have one size"),
    ("cajnn", "img.png", "OUT/sr.png", ["+infer_options.bogus=1"], "unknown infer option(s) bogus"),
    ("cajnn", "img.png", "OUT/sr.png", ["device=cuda"], "no CUDA GPU is available"),
    ("cajnn", "img.png", "OUT/sr.txt", [], "unsupported file type '.txt'"),
]


@pytest.mark.parametrize("project,inp,out,extra,message", INFER_CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}-{c[4][:20]}" for c in INFER_CASES])
def test_infer_mistakes_are_one_line_and_touch_nothing(project, inp, out, extra, message, media, tmp_path):
    before = snapshot(media)
    output = Path(out.replace("OUT", str(tmp_path / "out")))
    output = output if output.is_absolute() else media / output
    key = "gallery" if project == "faceset" else "input"
    extra = [e.replace("probe=", f"probe={media}/") for e in extra]
    res = run_cli(f"projects.{project}.infer", [*UNTRAINED[project], f"{key}={media / inp}", f"output={output}",
                                                *extra], media, tmp_path / "logs", tmp_path)
    check_refused(res, message, media, before, output)


@pytest.mark.parametrize("override,message", [
    ("model.optimizer.lr=fast", "model.optimizer.lr must be a number, got 'fast'"),
    ("data.batch_size=two", "data.batch_size must be an integer, got 'two'"),
    ("model.optimizer.name=adamx", "unknown optimizer 'adamx'"),
    ("model.scheduler.name=linear", "unknown scheduler 'linear'"),
    ("trainer.max_steps=abc", "trainer.max_steps must be an integer, got 'abc'"),
    ("+model.optimizer.lrr=1", "model.optimizer: unknown key(s) lrr"),
])
def test_wrong_typed_or_unknown_training_values(override, message, demo_data, tmp_path):
    res = run_cli("projects.cajnn.train", ["+experiment=smoke", override], demo_data, tmp_path / "logs", tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], res.stderr[-2000:]
    assert not (tmp_path / "logs" / "cajnn" / "smoke" / "runs").exists() or not list(
        (tmp_path / "logs").rglob("*.ckpt"))


def test_eval_on_a_test_image_smaller_than_the_scale(demo_data, tmp_path):
    import shutil

    tests = tmp_path / "tests"
    shutil.copytree(demo_data / "demo" / "val", tests)
    write_image(tests / "tiny.png", np.zeros((1, 1, 3), np.uint8))
    res = run_cli("projects.cajnn.eval", ["model=tiny", "data=demo", "allow_untrained=true",
                                          f"data.test_sets.demo={tests}"], demo_data, tmp_path / "logs", tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert errors == [f"error: image {tests / 'tiny.png'} is 1×1 pixels, smaller than the scale factor 4"]


def test_zsm_into_an_existing_folder_keeps_what_it_did_not_write(media, tmp_path):
    """The folder output of ZSM used to be deleted and replaced: now the frames are added, nothing else goes."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    (out / "sub").mkdir()
    (out / "sub" / "keep.png").write_bytes(b"mine")
    before = snapshot(media)
    res = run_cli("projects.zsm.infer", [*UNTRAINED["zsm"], f"input={media / 'frames'}", f"output={out}"],
                  media, tmp_path / "logs", tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (out / "notes.txt").read_text() == "my notes" and (out / "sub" / "keep.png").read_bytes() == b"mine"
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i:05d}.png" for i in range(5)]  # 3 frames → 5
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # the temp folder is gone
    assert snapshot(media) == before


def test_a_folder_with_a_corrupt_file_finishes_the_others(media, tmp_path):
    out = tmp_path / "sr"
    before = snapshot(media)
    res = run_cli("projects.cajnn.infer", [*UNTRAINED["cajnn"], f"input={media / 'imgs_bad'}", f"output={out}"],
                  media, tmp_path / "logs", tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "1 of 2 inputs could not be processed (z.png)" in errors[0], errors
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]
    assert snapshot(media) == before
