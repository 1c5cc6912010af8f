"""Purpose-built misbehaving kernels for nbpool's integration tests.

``python badkernel.py MODE -f CONNECTION_FILE`` runs a minimal ipykernel-based
kernel whose ``execute_request`` misbehaves according to MODE:

- ``hang``: ignores SIGINT and never returns (an interrupt cannot stop it);
- ``segfault``: dereferences NULL (the process dies of SIGSEGV);
- ``exit``: calls ``os._exit(7)`` mid-execution.

Any other code is echoed back on stdout, so the kernel is usable until the
word ``boom`` appears in the code.
"""

import ctypes
import os
import signal
import sys
import time

from ipykernel.kernelapp import IPKernelApp
from ipykernel.kernelbase import Kernel

MODE = sys.argv.pop(1)


class BadKernel(Kernel):
    implementation = "badkernel"
    implementation_version = "0.1"
    language_info = {"name": "text", "mimetype": "text/plain", "file_extension": ".txt"}
    banner = "a kernel that misbehaves on 'boom'"

    def do_execute(
        self, code, silent, store_history=True, user_expressions=None, allow_stdin=False, **kw
    ):
        if "boom" in code:
            self.send_response(
                self.iopub_socket, "stream", {"name": "stdout", "text": "going down\n"}
            )
            time.sleep(0.5)  # let the iopub thread deliver it: the test checks it is kept
            if MODE == "hang":
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                while True:
                    time.sleep(0.1)
            elif MODE == "segfault":
                ctypes.string_at(0)
            elif MODE == "exit":
                os._exit(7)
        self.send_response(self.iopub_socket, "stream", {"name": "stdout", "text": code})
        return {
            "status": "ok",
            "execution_count": self.execution_count,
            "payload": [],
            "user_expressions": {},
        }


if __name__ == "__main__":
    IPKernelApp.launch_instance(kernel_class=BadKernel)
