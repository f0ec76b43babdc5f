from flamingo_vlm.data import Document, ImageFilter, ImageItem, TextItem, parse_html
from flamingo_vlm.data.skips import SkipCounts

PAGE = """<!doctype html><html><head><title>ignored</title><style>p {color: red}</style></head><body>
<nav><a href="/">Home</a> <a href="/about">About</a></nav>
<header>Site banner</header>
<h1>  A   day at the   zoo </h1>
<p>We saw <b>two</b> lions.<img src="img/lion.png" alt="a lion" width="200" height="150"> They slept.</p>
<ul><li>first item</li><li>second <i>item</i></li></ul>
<figure><img src="img/zebra.jpg"><figcaption>A zebra.</figcaption></figure>
<img src="img/lion.png">
<img src="img/icon.png" width="16" height="16">
<img src="img/banner.png" width="900" height="100">
<script>var tracking = 1;</script>
<div>outer<p>inner</p>tail</div>
<footer>Copyright</footer>
</body></html>"""


def test_dom_order_boilerplate_and_whitespace():
    skipped = SkipCounts()
    doc = parse_html(PAGE, base="/data/pages", skipped=skipped)
    assert doc.items == [
        TextItem("A day at the zoo"),
        TextItem("We saw two lions."),
        ImageItem(src="/data/pages/img/lion.png", alt="a lion", width=200, height=150),
        TextItem("They slept."),
        TextItem("first item"),
        TextItem("second item"),
        ImageItem(src="/data/pages/img/zebra.jpg"),
        TextItem("A zebra."),
        TextItem("outer"),
        TextItem("inner"),
        TextItem("tail"),
    ]
    # the repeated lion, the 16 px icon and the 9:1 banner
    assert skipped == {"duplicate_image": 1, "image_too_small": 1, "image_aspect_ratio": 1}


def test_src_resolution_against_url_and_custom_filter():
    doc = parse_html(
        '<p>x</p><img src="../a.png" width="40" height="40">',
        base="https://ex.com/blog/post.html",
        image_filter=ImageFilter(min_side=32),
    )
    assert doc.images == [ImageItem(src="https://ex.com/a.png", width=40, height=40)]


def test_document_json_round_trip():
    doc = parse_html(PAGE, base="/p")
    assert Document.from_json(doc.to_json()) == doc
