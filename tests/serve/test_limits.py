"""Every cap and error status, through HTTP: 400 naming the part, 401, 413, 422 and 503 (test_batching),
each in OpenAI's error shape, and never a 500 for anything a client sends."""

from __future__ import annotations

import base64
import http.server
import socket
import threading

import pytest
from serve_helpers import data_url, get, image_part, picture, post, text_part

from flamingo_vlm.serve.limits import ServeLimits

LIMITS = ServeLimits(
    max_body_bytes=200_000,
    max_images=3,
    max_image_bytes=50_000,
    max_image_pixels=100 * 100,
    max_prompt_tokens=60,
    max_tokens=16,
    max_n=2,
    max_num_beams=3,
    max_candidates=3,
)


@pytest.fixture(scope="module")
def limited(make_server):
    with make_server(limits=LIMITS) as (url, _):
        yield url


def chat_body(content: list, **extra) -> dict:
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 4, **extra}


def refused(url: str, body: dict | bytes, route: str = "/v1/chat/completions") -> tuple[int, dict]:
    status, answer = post(f"{url}{route}", body)
    error = answer["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return status, error


def test_the_caps_refuse_what_exceeds_them(limited):
    status, error = refused(limited, b"{" + b" " * 200_001 + b"}")
    assert (status, error["code"]) == (413, "body_too_large")
    status, error = refused(limited, chat_body([image_part(k) for k in range(4)]))
    assert (status, error["code"]) == (413, "too_many_images")
    big = picture(0, size=(150, 150))  # > 50 kB as PNG of noise, and over the pixel cap
    assert len(big) > 50_000
    status, error = refused(limited, chat_body([{"type": "image_url", "image_url": {"url": data_url(big)}}]))
    assert (status, error["code"], error["param"]) == (413, "image_too_large", "messages[0].content[0]")
    wide = picture(0, size=(101, 100), fmt="JPEG")  # small file, 10 100 pixels
    assert len(wide) < 50_000
    status, error = refused(
        limited, chat_body([text_part("a"), {"type": "image_url", "image_url": {"url": data_url(wide)}}])
    )
    assert (status, error["param"]) == (413, "messages[0].content[1]") and "pixels" in error["message"]
    status, error = refused(limited, chat_body([text_part("a red square is above a blue circle. " * 10)]))
    assert (status, error["code"]) == (413, "prompt_too_long")
    for field, value in (("max_tokens", 17), ("n", 3), ("num_beams", 4)):
        status, error = refused(limited, {**chat_body([text_part("hi")]), field: value})
        assert (status, error["param"]) == (400, field)
    status, error = refused(limited, {"prompt": "x", "candidates": ["a", "b", "c", "d"]}, "/v1/score")
    assert (status, error["param"]) == (413, "candidates")


def test_the_context_length_is_checked(server, model_and_processor):
    url, _ = server
    model, _ = model_and_processor
    status, error = refused(url, {**chat_body([text_part("hi")]), "max_tokens": model.max_length})
    assert (status, error["code"]) == (400, "context_length_exceeded")


@pytest.mark.parametrize(
    "body, param",
    [
        (chat_body([{"type": "image_url", "image_url": {"url": "data:image/png;base64,bm90IGFuIGltYWdl"}}]),
         "messages[0].content[0]"),  # "not an image"
        (chat_body([text_part("a"), {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]),
         "messages[0].content[1]"),
        (chat_body([{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]), "messages[0].content[0]"),
        (chat_body([{"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/x.png"}}]),
         "messages[0].content[0]"),  # remote images are off by default
        (chat_body([{"type": "video", "video": "x"}]), "messages[0].content[0]"),
        ({**chat_body([text_part("hi")]), "num_beams": 2, "temperature": 0.5}, "num_beams"),
    ],
)  # fmt: skip
def test_bad_parts_are_400_naming_them(server, body, param):
    status, error = refused(server[0], body)
    assert (status, error["param"]) == (400, param)


def test_a_candidate_holding_an_image_marker_is_400(server):
    status, error = refused(server[0], {"prompt": "Output:", "candidates": [" a", " <image>"]}, "/v1/score")
    assert (status, error["param"]) == (400, "candidates")
    status, error = refused(server[0], {"prompt": "Output:", "candidates": [" a", ""]}, "/v1/score")
    assert (status, error["param"]) == (400, "candidates")


def test_extreme_sampling_values_are_served(server):
    for extra in ({"temperature": 1e-40}, {"temperature": 2.0, "top_p": 1e-9}, {"seed": -(2**62), "temperature": 1}):
        status, body = post(f"{server[0]}/v1/chat/completions", {**chat_body([text_part("hi")]), **extra})
        assert status == 200 and body["choices"][0]["finish_reason"] in ("stop", "length"), extra


def test_raw_completion_marker_mismatch_is_400(server):
    status, error = refused(server[0], {"prompt": "<image><image>Output:", "images": [data_url(picture(1))]},
                            "/v1/completions")  # fmt: skip
    assert (status, error["param"]) == (400, "prompt") and "marker" in error["message"]


@pytest.mark.parametrize(
    "body, param",
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"content": "no role"}]}, "messages[0].role"),
        ({**chat_body([text_part("hi")]), "temperature": 5}, "temperature"),
        ({**chat_body([text_part("hi")]), "max_tokens": "many"}, "max_tokens"),
        ({**chat_body([text_part("hi")]), "n": 0}, "n"),
        ({**chat_body([text_part("hi")]), "seed": 2**64}, "seed"),
    ],
)
def test_schema_violations_are_422(server, body, param):
    status, error = refused(server[0], body)
    assert (status, error["param"]) == (422, param)


def test_malformed_json_and_unknown_routes(server):
    url, _ = server
    assert refused(url, b"{not json")[0] == 422
    assert get(f"{url}/v1/nothing")[0] == 404


class _OnePicture(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def picture_host():
    """A local HTTP server whose every path answers one PNG."""
    _OnePicture.body = picture(5)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OnePicture)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_remote_images_when_allowed_equal_data_urls(make_server, picture_host):
    local = {"type": "image_url", "image_url": {"url": data_url(picture(5))}}
    remote = {"type": "image_url", "image_url": {"url": f"{picture_host}/p.png"}}
    tight = ServeLimits(max_image_bytes=len(picture(5)) - 1, max_body_bytes=10**6)
    with make_server(allow_remote_images=True) as (url, _):
        a = post(f"{url}/v1/chat/completions", chat_body([remote, text_part("Output:")]))
        b = post(f"{url}/v1/chat/completions", chat_body([local, text_part("Output:")]))
        assert a[0] == b[0] == 200 and a[1]["choices"] == b[1]["choices"]
    with make_server(allow_remote_images=True, limits=tight) as (url, _):
        status, error = refused(url, chat_body([remote]))
        assert (status, error["code"]) == (413, "image_too_large")


def test_api_key_guards_every_route_but_health_and_the_page(make_server):
    with make_server(api_key="s3cret") as (url, _):
        body = chat_body([text_part("hi")])
        assert post(f"{url}/v1/chat/completions", body)[0] == 401
        status, answer = post(f"{url}/v1/chat/completions", body, key="wrong")
        assert status == 401 and answer["error"]["code"] == "invalid_api_key"
        assert post(f"{url}/v1/chat/completions", body, key="s3cret")[0] == 200
        for route in ("/v1/models", "/metrics"):
            assert get(f"{url}{route}")[0] == 401
            assert get(f"{url}{route}", key="s3cret")[0] == 200
        assert get(f"{url}/health")[0] == 200
        assert get(f"{url}/")[0] == 200  # static; the page sends the key the user types
        # an unauthenticated request is refused before its body is read (only its headers are sent)
        assert status_line(url, 30 * 1024 * 1024).startswith(b"HTTP/1.1 401")


def status_line(url: str, content_length: int, key: str | None = None) -> bytes:
    """Send only the headers of a POST declaring ``content_length`` bytes; the response's status line."""
    host, port = url.removeprefix("http://").split(":")
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"{auth}Content-Length: {content_length}\r\n\r\n".encode())  # fmt: skip
        return sock.recv(100).split(b"\r\n")[0]


def test_a_declared_oversized_body_is_refused_unread(limited):
    assert status_line(limited, LIMITS.max_body_bytes + 1).startswith(b"HTTP/1.1 413")


def test_base64_images_decode_whatever_the_mime_type(server):
    jpeg = base64.b64encode(picture(3, fmt="JPEG")).decode()
    status, _ = post(f"{server[0]}/v1/chat/completions", chat_body([
        {"type": "image_url", "image_url": {"url": f"data:application/octet-stream;base64,{jpeg}"}}]))  # fmt: skip
    assert status == 200
