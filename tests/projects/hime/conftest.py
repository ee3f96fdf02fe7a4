import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def one_torch_thread():
    """The networks here are tiny: one intra-op thread is as fast and does not stall on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
