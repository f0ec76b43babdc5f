"""Memes: a scene with a sentence written across the bottom, true or false of the scene.

ShapesWorld's "hateful" meme is a *lying* one: ``label = 1`` when the written sentence is false of
the picture, ``0`` when it is true.  Like HatefulMemes, the label is not visible in either modality
alone — the same sentence is harmless on one picture and "hateful" on another — so a text-only
model is at chance.  Shapes are kept to the top two rows of the grid so the caption band never
hides the shape a sentence is about.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from flamingo_vlm.world.language import statement
from flamingo_vlm.world.scene import RenderConfig, Scene, random_scene, render_scene

UPPER_CELLS = tuple((row, col) for row in range(2) for col in range(3))


@dataclass(frozen=True)
class Meme:
    scene: Scene
    text: str
    label: int  # 1 = the text is false of the scene ("hateful"), 0 = true


def random_meme(rng: random.Random, config: RenderConfig) -> Meme:
    """A balanced coin decides whether the written sentence lies."""
    scene = random_scene(rng, config, max_shapes=3, cells=UPPER_CELLS)
    lying = rng.random() < 0.5
    return Meme(scene, statement(scene, truth=not lying, rng=rng), int(lying))


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: only the fixed bitmap font
        return ImageFont.load_default()


def _wrap(text: str, font, width: int, draw: ImageDraw.ImageDraw) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and draw.textlength(candidate, font=font) <= width:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines


def render_meme(meme: Meme, config: RenderConfig) -> Image.Image:
    """The scene with the sentence in white on a dark band over its bottom third."""
    image = render_scene(meme.scene, config)
    side = config.image_size
    draw = ImageDraw.Draw(image)
    band_top = int(side * 2 / 3)
    draw.rectangle((0, band_top, side, side), fill=(15, 15, 15))
    font = _font(max(side // 9, 6))
    line_height = max(side // 9, 6) + 1
    for i, line in enumerate(_wrap(meme.text, font, side - 2, draw)[: (side - band_top) // line_height]):
        draw.text((1, band_top + 1 + i * line_height), line, fill=(245, 245, 245), font=font)
    return image
