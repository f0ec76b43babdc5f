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


def test_pages_nested_deeper_than_any_real_page_are_refused_before_parsing():
    """Fuzz campaign: the HTML tree builder takes ~20 s on 10^5 nested divs (its cost grows with depth²)."""
    import time

    import pytest

    from flamingo_vlm.data.html import MAX_NESTING_DEPTH, nesting_depth
    from flamingo_vlm.data.skips import BadSample

    depth = 10 * MAX_NESTING_DEPTH
    page = "<body>" + "<div>" * depth + "<p>deep</p><img src='a.png'>" + "</div>" * depth
    start = time.perf_counter()
    with pytest.raises(BadSample) as err:
        parse_html(page)
    assert err.value.reason == "too_deeply_nested" and time.perf_counter() - start < 5
    # void elements, optional end tags and closed elements do not deepen the estimate
    assert nesting_depth("<div><p>a<p>b<br><img src=x><li>c<span>d</span></div><div><b>e</b></div>") == 2
    assert parse_html("<div>" * 50 + "<p>fine</p>").texts == [TextItem("fine")]


def test_stored_fields_of_the_wrong_type_make_a_bad_document():
    """Fuzz campaign: an integer src crashed the sampler (AttributeError); a null text became the text "None"."""
    import json

    import pytest

    from flamingo_vlm.data.skips import BadSample

    text = {"type": "text", "text": "a cat"}
    for bad in (
        {"type": "image", "src": 0},
        {"type": "image", "src": "0.jpg", "width": "wide"},
        {"type": "image", "src": "0.jpg", "height": True},
        {"type": "image", "src": "0.jpg", "alt": None},
        {"type": "image"},
        {"type": "text", "text": None},
        {"type": "text", "text": 12},
    ):
        with pytest.raises(BadSample) as err:
            Document.from_json(json.dumps({"items": [text, bad]}))
        assert err.value.reason == "bad_document"
    good = {"type": "image", "src": "0.jpg", "alt": "", "width": 80, "height": None}
    assert Document.from_json(json.dumps({"items": [text, good]})).images == [ImageItem("0.jpg", "", 80, None)]
