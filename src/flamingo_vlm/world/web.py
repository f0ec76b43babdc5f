"""Web pages in HTML whose text refers to their images in DOM order: the world's M3W.

Pages come in kinds that each teach something in context, as real web pages do by accident:
articles (captions around pictures), quizzes (question/answer after each picture), attribute lists
(every picture of a page followed by the same *kind* of word: its colour, or its shape...), naming
pages (words invented for this page only are bound to colours or shapes — "the *dax* is the red
one" — so only the page itself says what a word means: the bursty data that teaches binding), and
fact-checked memes.  Each page also carries navigation and footer boilerplate, which the HTML
parser must drop.
"""

from __future__ import annotations

import html
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image

from flamingo_vlm.world.language import NUMBER_WORDS, caption, invented_words, questions
from flamingo_vlm.world.memes import random_meme, render_meme
from flamingo_vlm.world.scene import ATTRIBUTE_VALUES, RenderConfig, random_scene, render_scene, single_shape_scene

PAGE_KINDS = ("article", "quiz", "attribute", "naming", "memes")


@dataclass(frozen=True)
class PageMix:
    """Relative frequency of each page kind, and the number of pictures per page."""

    article: float = 0.2
    quiz: float = 0.2
    attribute: float = 0.25
    naming: float = 0.25
    memes: float = 0.1
    min_images: int = 3
    max_images: int = 8

    def __post_init__(self) -> None:
        weights = [getattr(self, k) for k in PAGE_KINDS]
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"page kind weights must be >= 0 with a positive sum, got {weights}")
        if not 1 <= self.min_images <= self.max_images:
            raise ValueError(f"need 1 <= min_images <= max_images, got {self.min_images}, {self.max_images}")


@dataclass
class Page:
    """A page before it is written: HTML whose ``<img src>`` are the names of ``images``."""

    kind: str
    title: str
    blocks: list[str] = field(default_factory=list)  # HTML of the <body> content, in order
    images: dict[str, Image.Image] = field(default_factory=dict)

    def add_image(self, image: Image.Image, name: str, alt: str = "") -> None:
        self.images[name] = image
        self.blocks.append(f'<img src="{name}" alt="{html.escape(alt)}" width="{image.width}" height="{image.height}">')

    def add_text(self, text: str, tag: str = "p") -> None:
        self.blocks.append(f"<{tag}>{html.escape(text)}</{tag}>")

    def to_html(self) -> str:
        body = "\n".join(self.blocks)
        return (
            f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(self.title)}</title></head>\n'
            f'<body>\n<nav><a href="/">ShapesWorld</a> | <a href="/{self.kind}">{self.kind}</a></nav>\n'
            f"<h1>{html.escape(self.title)}</h1>\n{body}\n"
            f"<footer>© ShapesWorld. All shapes reserved.</footer>\n</body></html>\n"
        )


PageBuilder = Callable[[Page, random.Random, RenderConfig, str, int], None]


def _article(page: Page, rng: random.Random, config: RenderConfig, prefix: str, n: int) -> None:
    text_first = rng.random() < 0.5  # some pages describe a picture before it, some after
    page.add_text(rng.choice(("Some shapes I saw today.", "A small gallery.", "Pictures from the shape garden.")))
    for i in range(n):
        scene = random_scene(rng, config)
        text = caption(scene, rng)
        if text_first:
            page.add_text(text[0].upper() + text[1:])
        page.add_image(render_scene(scene, config), f"{prefix}_{i}.png", alt=caption(scene, rng))
        if not text_first:
            page.add_text(text[0].upper() + text[1:])


def _quiz(page: Page, rng: random.Random, config: RenderConfig, prefix: str, n: int) -> None:
    for i in range(n):
        scene = random_scene(rng, config)
        page.add_image(render_scene(scene, config), f"{prefix}_{i}.png")
        for q in questions(scene, rng.choice((1, 1, 2)), rng):
            page.add_text(f"Question: {q.question} Answer: {q.answer}")


def _attribute(page: Page, rng: random.Random, config: RenderConfig, prefix: str, n: int) -> None:
    """Every picture is followed by the same kind of attribute; only the pattern says which kind."""
    kind = rng.choice(("colour", "shape", "size", "position", "texture", "count"))
    style = rng.choice(("{}", "Output: {}", "{}."))
    for i in range(n):
        if kind == "count":
            scene = random_scene(rng, config)
            value = rng.choice((str(len(scene.shapes)), NUMBER_WORDS[len(scene.shapes)]))
        else:
            scene = single_shape_scene(rng, config)
            value = scene.shapes[0].attribute(kind)
        page.add_image(render_scene(scene, config), f"{prefix}_{i}.png")
        page.add_text(style.format(value))


def _naming(page: Page, rng: random.Random, config: RenderConfig, prefix: str, n: int) -> None:
    """Invented words bound to colours or shapes for this page only, defined or left to be inferred."""
    kind = rng.choice(("colour", "shape"))
    values = rng.sample(ATTRIBUTE_VALUES[kind], rng.choice((2, 2, 3)))
    words = invented_words(rng, len(values))
    if rng.random() < 0.5:
        one = " one" if kind == "colour" else ""  # "the dax is the red one", "the dax is the circle"
        definitions = [f"the {w} is the {v}{one}" for w, v in zip(words, values)]
        page.add_text("On this page, " + ", and ".join(definitions) + ".")
    style = rng.choice(("{}", "Output: {}", "This is a {}.", "a {}"))
    for i in range(n):
        j = rng.randrange(len(values))
        scene = single_shape_scene(rng, config, **{kind: values[j]})
        page.add_image(render_scene(scene, config), f"{prefix}_{i}.png")
        page.add_text(style.format(words[j]))


_MEME_VERDICTS = (
    ('is an image with written: "{text}" on it. Is it hateful? Answer: {yes}', "yes", "no"),
    ('The words "{text}" are {yes}.', "false", "true"),
    ('Fact check: "{text}". Is it wrong? Answer: {yes}', "yes", "no"),
)


def _memes(page: Page, rng: random.Random, config: RenderConfig, prefix: str, n: int) -> None:
    """Memes with a verdict; in ShapesWorld a meme that lies about its picture is the hateful one."""
    template, lie, truth = rng.choice(_MEME_VERDICTS)
    for i in range(n):
        meme = random_meme(rng, config)
        page.add_image(render_meme(meme, config), f"{prefix}_{i}.png")
        page.add_text(template.format(text=meme.text, yes=lie if meme.label else truth))


_BUILDERS: dict[str, tuple[PageBuilder, tuple[str, ...]]] = {
    "article": (_article, ("Shape diary", "My shapes", "Gallery")),
    "quiz": (_quiz, ("Shape quiz", "Questions and answers", "Test yourself")),
    "attribute": (_attribute, ("List", "Examples", "Catalogue")),
    "naming": (_naming, ("New words", "Meet the shapes", "Names")),
    "memes": (_memes, ("Memes", "Fact checks", "Funny pictures")),
}


def random_page(rng: random.Random, config: RenderConfig, mix: PageMix, prefix: str) -> Page:
    """A page of a kind drawn from ``mix``; its images are named ``{prefix}_{i}.png``."""
    kind = rng.choices(PAGE_KINDS, weights=[getattr(mix, k) for k in PAGE_KINDS])[0]
    builder, titles = _BUILDERS[kind]
    page = Page(kind, rng.choice(titles))
    builder(page, rng, config, prefix, rng.randint(mix.min_images, mix.max_images))
    return page
