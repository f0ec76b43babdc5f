"""Scenes of coloured shapes and their rendering with Pillow.

A scene is a few shapes on a noisy grey background.  Shapes stand in distinct cells of a 3×3 grid
(jittered inside their cell) so that "where is the red circle?" always has one answer and shapes
never hide each other; colours are jittered, some shapes are striped and every pixel gets noise,
so that reading an attribute takes a trained vision encoder rather than a pixel lookup.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

from flamingo_vlm.world.seeding import numpy_rng

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 45, 45),
    "green": (55, 170, 65),
    "blue": (50, 95, 225),
    "yellow": (230, 210, 45),
    "purple": (150, 65, 200),
    "orange": (240, 135, 35),
}
SHAPES = ("circle", "square", "triangle", "diamond", "star")
SIZES = ("small", "large")
TEXTURES = ("plain", "striped")
ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "center", "right")
CELLS = tuple((row, col) for row in range(3) for col in range(3))

# Radius as a fraction of the image side: large shapes still fit a grid cell with room to jitter.
RADIUS = {"small": 0.085, "large": 0.145}


def position_name(row: int, col: int) -> str:
    """The answer to "where is it?": ``"top left"``, ``"top"``, ``"left"``, ``"center"``, ..."""
    vertical = "" if row == 1 else ROWS[row]
    horizontal = "" if col == 1 else COLUMNS[col]
    return " ".join(p for p in (vertical, horizontal) if p) or "center"


POSITIONS = tuple(position_name(r, c) for r, c in CELLS)


@dataclass(frozen=True)
class Shape:
    """One shape; ``x``, ``y`` are its centre as fractions of the image side."""

    shape: str
    colour: str
    size: str
    x: float
    y: float
    texture: str = "plain"

    @property
    def cell(self) -> tuple[int, int]:
        return min(int(self.y * 3), 2), min(int(self.x * 3), 2)

    @property
    def position(self) -> str:
        return position_name(*self.cell)

    def attribute(self, kind: str) -> str:
        """The value of ``kind`` (``colour``, ``shape``, ``size``, ``texture`` or ``position``)."""
        if kind not in ATTRIBUTE_KINDS:
            raise ValueError(f"unknown attribute kind {kind!r}; choose from {ATTRIBUTE_KINDS}")
        return getattr(self, kind)


ATTRIBUTE_KINDS = ("colour", "shape", "size", "texture", "position")
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOURS),
    "shape": SHAPES,
    "size": SIZES,
    "texture": TEXTURES,
    "position": POSITIONS,
}


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]
    background: int  # grey level of the background
    seed: int  # pixel noise and colour jitter

    def with_shapes(self, shapes: tuple[Shape, ...]) -> Scene:
        return replace(self, shapes=shapes)


@dataclass(frozen=True)
class RenderConfig:
    """How scenes look; ``image_size`` is the side of the square images in pixels."""

    image_size: int = 64
    noise: float = 6.0  # std of the per-pixel Gaussian noise (grey levels)
    colour_jitter: int = 18  # max per-channel shift of a shape's colour
    striped_prob: float = 0.25

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16 pixels for shapes to be recognisable, got {self.image_size}")
        if self.noise < 0 or self.colour_jitter < 0 or not 0 <= self.striped_prob <= 1:
            raise ValueError("noise and colour_jitter must be >= 0 and striped_prob in [0, 1]")


def random_shape(rng: random.Random, cell: tuple[int, int], config: RenderConfig, **fixed: str) -> Shape:
    """A shape in ``cell`` with random attributes, except those given in ``fixed``."""
    attributes = {
        "shape": rng.choice(SHAPES),
        "colour": rng.choice(tuple(COLOURS)),
        "size": rng.choice(SIZES),
        "texture": "striped" if rng.random() < config.striped_prob else "plain",
    }
    attributes.update(fixed)
    row, col = cell
    slack = 1 / 6 - RADIUS[attributes["size"]] - 0.01  # how far the centre may move inside the cell
    x = (col + 0.5) / 3 + rng.uniform(-slack, slack)
    y = (row + 0.5) / 3 + rng.uniform(-slack, slack)
    return Shape(x=round(x, 4), y=round(y, 4), **attributes)


def random_scene(
    rng: random.Random,
    config: RenderConfig,
    num_shapes: int | None = None,
    max_shapes: int = 4,
    cells: tuple[tuple[int, int], ...] = CELLS,
) -> Scene:
    """1–``max_shapes`` random shapes in distinct cells chosen among ``cells``."""
    n = num_shapes if num_shapes is not None else rng.randint(1, max_shapes)
    if not 1 <= n <= len(cells):
        raise ValueError(f"cannot place {n} shapes in {len(cells)} cells")
    chosen = rng.sample(cells, n)
    shapes = tuple(random_shape(rng, c, config) for c in chosen)
    return Scene(shapes, background=rng.randint(35, 95), seed=rng.getrandbits(32))


def _outline(shape: Shape, side: int) -> list[tuple[float, float]]:
    """Polygon vertices of a non-circular shape, in pixels."""
    cx, cy, r = shape.x * side, shape.y * side, RADIUS[shape.size] * side
    if shape.shape == "square":
        h = 0.85 * r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape.shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    if shape.shape == "triangle":
        return [(cx + r * math.cos(a), cy - r * math.sin(a)) for a in (math.pi / 2, 7 * math.pi / 6, 11 * math.pi / 6)]
    if shape.shape == "star":
        return [
            (cx + rad * math.cos(a), cy - rad * math.sin(a))
            for k in range(10)
            for a, rad in [(math.pi / 2 + k * math.pi / 5, r if k % 2 == 0 else 0.45 * r)]
        ]
    raise ValueError(f"unknown shape {shape.shape!r}")


def _draw_shape(canvas: Image.Image, shape: Shape, fill: tuple[int, int, int]) -> None:
    side = canvas.width
    mask = Image.new("L", canvas.size, 0)
    draw = ImageDraw.Draw(mask)
    if shape.shape == "circle":
        cx, cy, r = shape.x * side, shape.y * side, RADIUS[shape.size] * side
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    else:
        draw.polygon(_outline(shape, side), fill=255)
    paint = Image.new("RGB", canvas.size, fill)
    if shape.texture == "striped":
        dark = tuple(int(c * 0.45) for c in fill)
        stripes = ImageDraw.Draw(paint)
        step = max(side // 16, 3)
        for offset in range(-side, side, step):
            stripes.line((offset, 0, offset + side, side), fill=dark, width=max(step // 3, 1))
    canvas.paste(paint, (0, 0), mask)


def render_scene(scene: Scene, config: RenderConfig, noise_rng: random.Random | None = None) -> Image.Image:
    """The RGB image of a scene; noise comes from ``noise_rng`` when given (video frames), else from the scene."""
    rng = random.Random(scene.seed)
    side = config.image_size
    canvas = Image.new("RGB", (side, side), (scene.background,) * 3)
    for shape in scene.shapes:
        base = COLOURS[shape.colour]
        fill = tuple(min(max(c + rng.randint(-config.colour_jitter, config.colour_jitter), 0), 255) for c in base)
        _draw_shape(canvas, shape, fill)
    if config.noise > 0:
        noise = numpy_rng(noise_rng or rng).normal(0.0, config.noise, (side, side, 3))  # (h, w, c)
        pixels = np.asarray(canvas, dtype=np.float32) + noise
        canvas = Image.fromarray(np.clip(pixels.round(), 0, 255).astype(np.uint8))
    return canvas


def single_shape_scene(rng: random.Random, config: RenderConfig, **fixed: str) -> Scene:
    """One shape in a random cell, with the attributes in ``fixed`` (e.g. ``colour="red"``) imposed."""
    shape = random_shape(rng, rng.choice(CELLS), config, **fixed)
    return Scene((shape,), background=rng.randint(35, 95), seed=rng.getrandbits(32))


def encode_image(image: Image.Image, fmt: str = "PNG") -> bytes:
    """Deterministic file bytes; JPEGs keep full-resolution chroma so thin colour edges survive."""
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, format="JPEG", quality=95, subsampling=0)
    else:
        image.save(buffer, format=fmt)
    return buffer.getvalue()
