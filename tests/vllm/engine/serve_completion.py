"""Run in the vLLM venv: ``vllm serve CHECKPOINT`` on localhost, one OpenAI completion request.

Usage: ``python serve_completion.py CHECKPOINT RESULT.json``. Starts the server as a child
process, waits for ``/v1/models``, posts a greedy ``/v1/completions`` request, writes the JSON
answer, and stops the server (it is always stopped, also on failure).
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
    vllm = Path(sys.executable).with_name("vllm")
    cmd = [str(vllm), "serve", checkpoint, "--host", "127.0.0.1", "--port", str(port),
           "--enforce-eager", "--max-model-len", "512", "--served-model-name", "ours"]  # fmt: skip
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
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


if __name__ == "__main__":
    main(*sys.argv[1:3])
