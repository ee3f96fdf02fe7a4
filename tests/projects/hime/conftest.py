import pytest

from tests.helpers import torch_threads


@pytest.fixture(autouse=True, scope="package")
def one_torch_thread():
    with torch_threads(1):
        yield
