import pytest
from jupyter_client.kernelspec import KernelSpecManager


@pytest.fixture(scope="session")
def bash_kernel_installed():
    if "bash" not in KernelSpecManager().find_kernel_specs():
        pytest.fail(
            "the 'bash' kernelspec is missing: `python -m bash_kernel.install --sys-prefix`"
        )
