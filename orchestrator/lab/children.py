"""Real programs the lab runs as its children (krb5kdc, pebble, named): found, tied to the lab's life, on free ports.

On Linux a child asks the kernel to kill it when its parent dies (PR_SET_PDEATHSIG, prctl(2)), so a lab
killed with SIGKILL leaves none of them behind; a normal stop terminates the child and waits.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess

# Where Debian puts system programs; PATH first for other layouts.
_SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")
_PR_SET_PDEATHSIG = 1


def find_program(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in _SBIN:
        candidate = os.path.join(folder, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def die_with_parent() -> None:
    """In a child process before exec: SIGKILL when the process that started it dies."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    # The parent may have died between fork and prctl: then nobody would stop us.
    if os.getppid() == 1:
        os._exit(1)


def free_port(host: str, udp: bool = True) -> int:
    """A port free on `host` for TCP (and UDP too when `udp`: a KDC or a DNS server listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            if not udp:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue
            return port
    raise OSError(f"no free port on {host}")


def stop_child(process: subprocess.Popen[bytes] | None) -> None:
    """Terminate a child and wait for it (killed when it does not end within 5 s)."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
