"""f. A worker on another host (network namespace) against a local worker.

What it measures
----------------
One pool with two warm workers: a local one (kernelspec ``python3``) and one
on a namespace "host" joined to this machine by a veth pair, started through
a kernel provisioner (the test suite's: ``ip netns exec``, bound to the
namespace's own address, 10.213.47.0/24). In the same run, interleaved call
by call:

- round trip: ``pool.execute("1+1")`` in a session on each worker;
- throughput: one execution that writes 8 MB to stdout, collected by nbpool
  (MB/s of output delivered to the caller);
- round trip to a kernel on the same host bound to *its* loopback, attached
  through an SSH tunnel (``pool.attach(..., sshserver=...)``, Debian's sshd
  in the namespace): what SSH's encryption and forwarding add instead of
  CurveZMQ.

Why the comparison is fair
--------------------------
Same pool, same protocol code, same kernel (ipykernel from this venv, same
extra arguments) and the same CurveZMQ encryption on both workers (checked).
The only difference is the path: loopback for the local worker, the veth
link and a second network stack for the remote one. The veth link adds no
artificial latency, so this is nbpool's floor for remote workers: a real
network adds its round-trip time to every execution and bounds throughput
by its bandwidth.

Needs root (it creates a network namespace and removes it at the end).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import nbpool

from ._harness import Processes, Row, interleaved, median

NAME = "remote"
PAYLOAD = 8_000_000
THROUGHPUT_CODE = f"import sys; sys.stdout.write('x' * {PAYLOAD})"


def run(quick: bool = False) -> list[Row]:
    from tests.netns import hosts, provisioner
    from tests.netns.sshhost import SshHost

    rounds = 100 if quick else 400
    big_rounds = 6 if quick else 20
    hosts.require()
    hosts.remove_stale()
    tmp = Path(tempfile.mkdtemp(prefix="nbpool-bench-remote-"))
    (tmp / "jupyter" / "kernels").mkdir(parents=True)
    old_path, old_pythonpath = os.environ.get("JUPYTER_PATH"), os.environ.get("PYTHONPATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(tmp / "jupyter"), old_path]))
    registered = provisioner.register(tmp / "provisioner")
    host = hosts.create("bench")
    pool = sshd = kernel = None
    procs = Processes()
    old_env = {k: os.environ.get(k) for k in ("PATH", "HOME")}
    try:
        remote = provisioner.write_kernelspec(
            tmp / "jupyter" / "kernels", f"netns-{host.name}", host.name, host.address
        )
        pool = nbpool.Pool(size=1, max_size=2, kernel_name=remote)
        pool.start()
        pool.execute("1", session="local", kernel="python3")
        pool.execute("1", session="remote")
        procs.add_pool(pool)  # the local worker; the remote one dies with its namespace
        workers = {w["session"]: w for w in pool.status()["workers"]}
        if not (workers["local"]["encrypted"] and workers["remote"]["encrypted"]):
            raise AssertionError(f"unfair: encryption differs: {workers}")

        def rt(session):
            return lambda: pool.execute("1+1", session=session)

        def big(session):
            def go():
                res = pool.execute(THROUGHPUT_CODE, session=session)
                assert len(res.stdout) == PAYLOAD

            return go

        interleaved({"remote": rt("remote"), "local": rt("local")}, 30)  # warm-up
        times = interleaved({"remote": rt("remote"), "local": rt("local")}, rounds)
        interleaved({"remote": big("remote"), "local": big("local")}, 2)
        big_times = interleaved({"remote": big("remote"), "local": big("local")}, big_rounds)

        sshd = SshHost(host, tmp / "ssh")
        os.environ["PATH"] = os.pathsep.join([str(sshd.bin), old_env["PATH"] or ""])
        kernel = sshd.start_loopback_kernel(
            tmp / "kernel-ssh.json", subprocess.DEVNULL, list(pool.ipykernel_args)
        )
        pool.attach(
            str(tmp / "kernel-ssh.json"),
            session="ssh",
            sshserver=f"root@{host.address}",
            sshkey=str(sshd.key),
        )
        interleaved({"ssh": rt("ssh"), "local": rt("local")}, 30)  # warm-up
        ssh_times = interleaved({"ssh": rt("ssh"), "local": rt("local")}, rounds)

        us, mb = 1e6, PAYLOAD / 1e6
        rt_ssh, rt_local_ssh = median(ssh_times["ssh"]) * us, median(ssh_times["local"]) * us
        rt_remote, rt_local = median(times["remote"]) * us, median(times["local"]) * us
        tp_remote, tp_local = mb / median(big_times["remote"]), mb / median(big_times["local"])
        where = f"veth to {host.address}, CurveZMQ on both"
        return [
            Row(
                "f. execute('1+1'): worker in another namespace vs local",
                rt_remote,
                rt_local,
                "us",
                rt_remote / rt_local,
                "info",
                None,
                f"{rounds} interleaved rounds; {where}",
            ),
            Row(
                "f. 8 MB stdout throughput: worker in another namespace vs local",
                tp_remote,
                tp_local,
                "MB/s",
                tp_remote / tp_local,
                "info",
                None,
                f"{big_rounds} interleaved rounds; ratio = remote / local MB/s; {where}",
            ),
            Row(
                "f. execute('1+1'): kernel attached through an SSH tunnel vs local",
                rt_ssh,
                rt_local_ssh,
                "us",
                rt_ssh / rt_local_ssh,
                "info",
                None,
                f"{rounds} interleaved rounds; ssh -L to {host.address}, kernel on its loopback",
            ),
        ]
    finally:
        if pool is not None:
            pool.shutdown()
        if kernel is not None:
            kernel.kill()
            kernel.wait()
        if sshd is not None:
            sshd.close()
        for key, value in old_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        procs.kill_leftovers()
        hosts.remove(host)
        provisioner.unregister(registered, old_pythonpath)
        if old_path is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = old_path
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    from .run import main

    main([NAME])
