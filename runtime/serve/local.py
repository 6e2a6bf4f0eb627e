"""``camrt serve`` in a child process on a free port of 127.0.0.1, and a small standard-library client for it:
what the tests and ``benchmarks/bench_serve.py`` talk to (a real server over real HTTP)."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np


def free_port() -> int:
    """A TCP port of 127.0.0.1 free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Reply:
    """An HTTP answer: status, headers (lower-case names) and the body (``json``: parsed, or None)."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


@dataclass
class Server:
    """A running ``camrt serve`` child: its address, process and log file."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def request(self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None,
                timeout: float = 120.0) -> Reply:
        """One request; an HTTP error status is a Reply too."""
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=dict(headers or {}))
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())

    def explain(self, image: bytes, fields: Mapping[str, Any] | None = None, multipart: bool = False,
                timeout: float = 120.0) -> Reply:
        """POST /v1/explain: the image as the body (fields in the query) or as multipart (fields in the form)."""
        fields = {k: str(v) for k, v in (fields or {}).items()}
        if not multipart:
            query = f"?{urlencode(fields)}" if fields else ""
            return self.request("POST", f"/v1/explain{query}", image, {"Content-Type": "application/octet-stream"},
                                timeout)
        body, kind = multipart_body(image, fields)
        return self.request("POST", "/v1/explain", body, {"Content-Type": kind}, timeout)

    def metrics(self) -> str:
        """The /metrics text."""
        return self.request("GET", "/metrics").body.decode()

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait for the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""


def multipart_body(image: bytes, fields: Mapping[str, str], filename: str = "image.png") -> tuple[bytes, str]:
    """A multipart/form-data body with the file field ``image`` and text ``fields``, and its Content-Type."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + image + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def decode_map(answer: Mapping[str, Any]) -> np.ndarray:
    """The map of an answer (its ``map.npy_b64``) as the array it was sent as."""
    return np.load(io.BytesIO(base64.b64decode(answer["map"]["npy_b64"])), allow_pickle=False)


@contextmanager
def serving(bundle: str | Path, args: Sequence[str] = (), ready_timeout: float = 120.0,
            env: Mapping[str, str] | None = None) -> Iterator[Server]:
    """``python -m camrt serve BUNDLE --port FREE ARGS`` until it is ready (``/readyz``), stopped (SIGTERM) after."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="camrt-serve-", suffix=".log")[1])
    handle = log.open("wb")
    command = [sys.executable, "-m", "camrt", "serve", str(bundle), "--host", "127.0.0.1", "--port", str(port),
               *map(str, args)]
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"camrt serve exited with {process.returncode}: {server.log_text()[-2000:]}")
            try:
                if server.request("GET", "/readyz", timeout=5).status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"camrt serve not ready after {ready_timeout:g} s: {server.log_text()[-2000:]}")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        handle.close()
        log.unlink(missing_ok=True)
