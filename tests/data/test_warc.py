"""``build-web`` on WARC files written by warcio: pages from HTML responses, images only from the WARC files."""

import io
import os

from data_fixtures import image_bytes
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from flamingo_vlm.cli import main
from flamingo_vlm.data import Document, ImageItem
from flamingo_vlm.data.build import build_web_shards, find_pages, find_warcs
from flamingo_vlm.data.shards import read_shard
from flamingo_vlm.data.skips import SkipCounts

RED, BLUE = (255, 0, 0), (0, 0, 255)


def write_warc(path, responses, gzip=True):
    """A WARC of ``(url, status, content type, body)`` responses, each preceded by its request record."""
    with open(path, "wb") as out:
        writer = WARCWriter(out, gzip=gzip)
        for url, status, content_type, body in responses:
            writer.write_record(
                writer.create_warc_record(url, "request", payload=io.BytesIO(b"GET / HTTP/1.0\r\n\r\n"))
            )
            headers = StatusAndHeaders(status, [("Content-Type", content_type)], protocol="HTTP/1.0")
            writer.write_record(
                writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=headers)
            )
    return path


def page(body):
    return f"<html><body>{body}</body></html>".encode()


def make_crawl(root, secret):
    """Two WARC files (gzipped per record, and plain) whose pages use each other's images; a corrupt WARC."""
    root.mkdir()
    write_warc(
        root / "a.warc.gz",
        [
            (
                "http://site.example/dir/post.html",
                "200 OK",
                "text/html; charset=utf-8",
                page(
                    '<p>Red first.</p><img src="../img/red.png#frag"><p>Then blue.</p>'
                    '<img src="http://cdn.example/blue.jpg">'
                    '<img src="missing.png"><img src="data:image/png;base64,AAAA">'
                    f'<img src="file://{secret}"><img src="{secret}"><img src="/img/broken.png">'
                ),
            ),
            ("http://site.example/img/red.png", "200 OK", "image/png", image_bytes(color=RED)),
            ("http://site.example/img/broken.png", "200 OK", "image/png", b"truncated"),
            ("http://site.example/gone.html", "404 Not Found", "text/html", page("<p>gone</p>")),
            ("http://site.example/latin1.html", "200 OK", "text/html; charset=latin-1", page("<p>caf\xe9</p>")),
        ],
    )
    write_warc(
        root / "b.warc",
        [
            ("http://cdn.example/blue.jpg", "200 OK", "image/jpeg", image_bytes(color=BLUE, fmt="JPEG")),
            (
                "http://other.example/",
                "200 OK",
                "text/html",
                page('<p>reuses red</p><img src="http://site.example/img/red.png">'),
            ),
            ("http://other.example/text", "200 OK", "text/html", page("<p>no pictures here</p>")),
            ("http://other.example/bad.html", "200 OK", "text/html", b"<p>\xff\xfe not utf-8</p>"),
        ],
        gzip=False,
    )
    (root / "c.warc.gz").write_bytes(b"this is not a WARC file at all")


def test_build_web_reads_warc_pages_and_their_images_from_the_warcs_only(tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(image_bytes(color=(1, 2, 3)))
    make_crawl(tmp_path / "crawl", secret)
    warcs = find_warcs([tmp_path / "crawl"])
    assert [os.path.basename(w) for w in warcs] == ["a.warc.gz", "b.warc", "c.warc.gz"]
    assert find_pages([tmp_path / "crawl"]) == []

    report = build_web_shards([], tmp_path / "out", warcs=warcs, pages_per_shard=2, progress=False)

    assert report.pages_kept == 2  # post.html and other.example/
    assert report.pages_skipped == {"no_images": 2, "non_utf8_text": 1, "unreadable_warc": 1}
    assert report.images_skipped == {
        "image_not_in_warc": 2,  # missing.png, and the local path: resolved against the page URL, never opened
        "unsupported_image_src": 2,  # data:, file:
        "undecodable_image": 1,
    }
    records = [(r, Document.from_json(r["json"])) for s in report.shards for r in read_shard(s, SkipCounts())]
    (post, doc), (other, doc2) = records[0], records[-1]
    assert [f"<{i.src}>" if isinstance(i, ImageItem) else i.text for i in doc.items] == [
        "Red first.",
        "<0.png>",
        "Then blue.",
        "<1.jpg>",
    ]
    assert post["0.png"] == image_bytes(color=RED) and post["1.jpg"] == image_bytes(color=BLUE, fmt="JPEG")
    assert doc.url == "http://site.example/dir/post.html"
    assert doc2.url == "http://other.example/" and other["0.png"] == image_bytes(color=RED)
    for shard in report.shards:
        assert secret.read_bytes() not in open(shard, "rb").read()


def test_cli_build_web_mixes_html_folders_and_warcs(tmp_path, capsys):
    make_crawl(tmp_path / "crawl", tmp_path / "nothing.png")
    (tmp_path / "crawl" / "img.png").write_bytes(image_bytes())
    (tmp_path / "crawl" / "local.html").write_text('<p>local</p><img src="img.png">')
    out = tmp_path / "out"
    assert main(["data", "build-web", str(tmp_path / "crawl"), "-o", str(out), "--no-progress", "--workers", "2"]) == 0
    assert "pages: kept 3" in capsys.readouterr().out
    assert os.listdir(out) == ["web-000000.tar"]
