import numpy as np
import pytest


def moving_frames(n: int = 28, h: int = 128, w: int = 144, seed: int = 0) -> np.ndarray:
    """A textured pattern drifting 2 px per frame (real motion for the interpolation to follow)."""
    rng = np.random.default_rng(seed)
    base = (rng.random((h + 2 * n, w + 2 * n, 3)) * 255).astype(np.uint8)
    import cv2

    base = cv2.GaussianBlur(base, (5, 5), 1.0)
    return np.stack([base[2 * i : 2 * i + h, 2 * i : 2 * i + w] for i in range(n)])


@pytest.fixture(scope="session")
def zsm_data(tmp_path_factory):
    from projects.zsm.demo_data import write_demo_layout

    root = tmp_path_factory.mktemp("zsmdata")
    write_demo_layout(moving_frames(42), root / "zsm_demo", name="drift", n_test=1, clip_frames=13)  # 5 training clips
    return root
