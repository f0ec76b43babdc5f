import json
import os
import tarfile

from data_fixtures import image_bytes, noisy_jpeg, transform

from flamingo_vlm.cli import main
from flamingo_vlm.data import InterleavedDataset, Slot
from flamingo_vlm.data.build import build_web_shards, find_pages, page_roots
from flamingo_vlm.tokenization import MEDIA_TOKEN


def make_site(root):
    """Good pages and one page for every bad-input case; returns the expected counts."""
    img = root / "img"
    img.mkdir(parents=True)
    (img / "red.png").write_bytes(image_bytes(color=(255, 0, 0)))
    (img / "blue.jpg").write_bytes(image_bytes(color=(0, 0, 255), fmt="JPEG"))
    (img / "red_copy.png").write_bytes(image_bytes(color=(255, 0, 0)))  # same bytes, other name
    (img / "tiny.png").write_bytes(image_bytes(size=(20, 20)))
    (img / "truncated.jpg").write_bytes(noisy_jpeg(0)[:500])
    (img / "garbage.png").write_bytes(b"not an image at all")
    pages = {
        "good1.html": '<p>A red square.</p><img src="img/red.png"><p>Then blue.</p><img src="img/blue.jpg"><p>End.</p>',
        "good2.html": '<h2>Broken things</h2><img src="img/truncated.jpg"><img src="img/missing.png">'
        '<img src="img/garbage.png">'
        '<img src="img/tiny.png"><img src="img/red.png"><img src="img/red_copy.png"><p>only red survives</p>',
        "no_text.html": '<div><img src="img/red.png"></div><script>text in a script is not text</script>',
        "no_images.html": "<p>words only</p>",
        "only_bad_images.html": '<p>words</p><img src="img/garbage.png">',
        "gallery.html": "<p>gallery</p>" + "".join(f'<img src="img/{i}.png">' for i in range(1000)),
    }
    for name, body in pages.items():
        (root / name).write_text(f"<html><body>{body}</body></html>", encoding="utf-8")
    (root / "latin1.html").write_bytes("<p>caf\xe9</p><img src='img/red.png'>".encode("latin-1"))
    pages_skipped = {"no_text": 1, "no_images": 2, "too_many_images": 1, "non_utf8_text": 1}
    images_skipped = {"undecodable_image": 3, "missing_image_file": 1, "image_too_small": 1, "duplicate_image": 1}
    return 2, pages_skipped, 3, images_skipped


def test_build_web_skips_every_bad_case_and_counts_add_up(tmp_path, tokenizer):
    kept, pages_skipped, images_kept, images_skipped = make_site(tmp_path / "site")
    pages = find_pages([tmp_path / "site"])
    report = build_web_shards(pages, tmp_path / "shards", pages_per_shard=1, progress=False)
    assert report.pages_kept == kept and report.pages_skipped == pages_skipped
    assert report.pages_kept + sum(report.pages_skipped.values()) == len(pages) == 7
    assert report.images_kept == images_kept and report.images_skipped == images_skipped
    assert len(report.shards) == kept

    with tarfile.open(report.shards[0]) as tar:
        names = sorted(tar.getnames())
        doc = json.loads(tar.extractfile(next(n for n in names if n.endswith(".json"))).read())
    assert [n.split(".", 1)[1] for n in names] == ["0.png", "1.jpg", "json"]  # good1.html, its images by position
    assert [i.get("text", i.get("src")) for i in doc["items"]] == [
        "A red square.",
        "0.png",
        "Then blue.",
        "1.jpg",
        "End.",
    ]
    assert doc["items"][1]["width"] == 80

    # the shards feed the interleaved dataset
    stream = InterleavedDataset(report.shards, tokenizer, transform).samples(Slot())
    sample = next(stream)
    assert (
        int((sample["input_ids"] == tokenizer.convert_tokens_to_ids(MEDIA_TOKEN)).sum())
        == sample["pixel_values"].shape[0]
    )


def test_cli_build_web(tmp_path, capsys):
    make_site(tmp_path / "site")
    assert main(["data", "build-web", str(tmp_path / "site"), "-o", str(tmp_path / "out"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "pages: kept 2, skipped 5" in out and "too_many_images=1" in out
    assert os.listdir(tmp_path / "out") == ["web-000000.tar"]


def test_cli_build_web_nothing_usable(tmp_path):
    (tmp_path / "a.html").write_text("<p>no images</p>")
    assert main(["data", "build-web", str(tmp_path / "a.html"), "-o", str(tmp_path / "out"), "--no-progress"]) == 1
    assert os.listdir(tmp_path / "out") == []


def test_build_web_shows_only_complete_shards_and_reruns_identically(tmp_path, monkeypatch):
    """A build killed midway must leave no half-written ``*.tar`` where readers look, and a rerun must write the
    same bytes: the shard being written is hidden under a temporary name, entries have a fixed mtime."""
    import flamingo_vlm.data.build as build

    site = tmp_path / "site"
    (site / "img").mkdir(parents=True)
    for i in range(5):
        (site / "img" / f"{i}.png").write_bytes(image_bytes(color=(40 * i, 0, 0)))
        (site / f"p{i}.html").write_text(f'<p>page {i}</p><img src="img/{i}.png">', encoding="utf-8")
    pages, out = find_pages([site]), tmp_path / "shards"
    visible = []  # what a reader saw each time the builder started a page

    def watched(*args, **kwargs):
        for path in sorted(out.glob("*.tar")):
            with tarfile.open(path) as tar:  # a half-written tar has no end-of-archive blocks... or no members
                visible.append((path.name, len(tar.getnames())))
        return page_record(*args, **kwargs)

    page_record = build.page_record
    monkeypatch.setattr(build, "page_record", watched)
    first = build_web_shards(pages, out, pages_per_shard=2, progress=False)
    assert [os.path.basename(s) for s in first.shards] == ["web-000000.tar", "web-000001.tar", "web-000002.tar"]
    assert visible and all(members == 2 * 2 for _, members in visible)  # only full shards: 2 pages × (json, png)
    assert sorted(os.listdir(out)) == ["web-000000.tar", "web-000001.tar", "web-000002.tar"]  # no temporaries
    before = {s: open(s, "rb").read() for s in first.shards}
    second = build_web_shards(pages, out, pages_per_shard=2, progress=False)
    assert {s: open(s, "rb").read() for s in second.shards} == before


def test_build_web_never_packs_files_outside_the_pages_folder(tmp_path):
    """Crafted ``src`` (climbing out, absolute, file: URL, symlinks) is a counted skip; the file is never packed."""
    secret = tmp_path / "private"
    secret.mkdir()
    (secret / "photo.png").write_bytes(image_bytes(color=(1, 2, 3)))  # a valid image: only the root check stops it
    (secret / "page.html").write_text('<p>private words</p><img src="photo.png">')
    site = tmp_path / "crawl" / "site"
    (site / "img").mkdir(parents=True)
    (site / "img" / "ok.png").write_bytes(image_bytes(color=(255, 0, 0)))
    (site / "img" / "link.png").symlink_to(secret / "photo.png")
    (site / "linked").symlink_to(secret, target_is_directory=True)  # a symlinked folder leading out
    (site / "sub").mkdir()
    (site / "sub" / "nested.html").write_text('<p>up one level is fine</p><img src="../img/ok.png">')
    (secret / "other.png").write_bytes(image_bytes(color=(3, 2, 1)))
    outside = secret / "photo.png"
    srcs = [
        "../../private/photo.png",
        str(secret / "other.png"),
        f"file://{outside}",
        f"file:{outside}",
        "img/link.png",
    ]
    (site / "evil.html").write_text("<p>evil</p>" + "".join(f'<img src="{s}">' for s in srcs))
    (site / "page_link.html").symlink_to(secret / "page.html")

    report = build_web_shards(
        find_pages([site]), tmp_path / "out", pages_per_shard=1, progress=False, roots=page_roots([site])
    )

    assert report.pages_kept == 1  # sub/nested.html: "../img" stays inside the root
    assert report.images_skipped == {"image_outside_root": 3, "unsupported_image_src": 2}
    # evil.html has no image left; the symlinked page and the page under the symlinked folder are refused
    assert report.pages_skipped == {"no_images": 1, "page_outside_root": 2}
    for shard in report.shards:
        data = open(shard, "rb").read()
        assert b"private words" not in data
        assert outside.read_bytes() not in data and (secret / "other.png").read_bytes() not in data


def test_build_web_without_roots_confines_images_to_the_page_folder(tmp_path):
    (tmp_path / "photo.png").write_bytes(image_bytes())
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "a.html").write_text('<p>words</p><img src="../photo.png">')
    report = build_web_shards(find_pages([tmp_path / "site"]), tmp_path / "out", progress=False)
    assert report.pages_kept == 0 and report.images_skipped == {"image_outside_root": 1}
