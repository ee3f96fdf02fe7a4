import pytest


@pytest.fixture(scope="session")
def faceset_data(tmp_path_factory):
    """DATA_DIR holding faceset_tiny/{train,val,test,lfw,ijbc} (synthetic identities in the real layouts)."""
    from projects.faceset.demo_data import write_tiny

    root = tmp_path_factory.mktemp("facesetdata")
    write_tiny(root / "faceset_tiny")
    return root
