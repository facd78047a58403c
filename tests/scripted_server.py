"""A scripted OpenAI-compatible server on 127.0.0.1 (no model) for the hostile-server tests of
`ftk synth-data` and `ftk eval --engine openai`: `behave(n, request_body)` decides each answer."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


def completion(text, finish="stop", usage=None) -> bytes:
    """A chat completion's JSON body."""
    return json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": finish}],
                       "usage": usage or {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}).encode()


def text_completion(text, finish="stop", prompt_tokens=5) -> bytes:
    """A (legacy) completions endpoint's JSON body."""
    return json.dumps({"id": "x", "object": "text_completion", "created": 0, "model": "m",
                       "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
                       "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 2,
                                 "total_tokens": prompt_tokens + 2}}).encode()


class Server:
    """`behave(n, request_body)` -> (status, content_type, body bytes[, headers]) or ("drip", seconds).
    `paths` records each POST's path (chat/completions or completions)."""

    def __init__(self, behave):
        self.behave, self.calls, self.lock, self.paths = behave, 0, threading.Lock(), []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, status, ctype, body, headers=None):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._send(200, "application/json", b'{"object": "list", "data": [{"id": "m", "object": "model"}]}')

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with server.lock:
                    n = server.calls
                    server.calls += 1
                    server.paths.append(self.path)
                action = server.behave(n, body)
                if action[0] == "drip":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "100000")
                    self.end_headers()
                    end = time.monotonic() + action[1]
                    try:
                        while time.monotonic() < end:
                            self.wfile.write(b" ")
                            self.wfile.flush()
                            time.sleep(0.3)
                    except OSError:
                        pass
                    return
                self._send(*action)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    """start(behave) -> a running Server; every server started is closed after the test."""
    servers = []

    def start(behave):
        s = Server(behave)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()
