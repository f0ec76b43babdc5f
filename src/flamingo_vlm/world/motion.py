"""Short videos: one shape moving steadily left, right, up or down, sometimes past a still distractor.

Frames are meant to be read at 1 frame per second (the paper's video rate), so a clip of T frames
lasts T seconds and every frame survives :func:`flamingo_vlm.video.read_video_frames` at ``fps=1``.
The direction of motion is only visible across frames: any single frame is a plain scene.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from PIL import Image

from flamingo_vlm.world.language import phrase
from flamingo_vlm.world.scene import RADIUS, RenderConfig, Scene, Shape, random_shape, render_scene

DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


@dataclass(frozen=True)
class Clip:
    """A mover that goes from its start by ``distance`` (fraction of the side) over ``num_frames`` frames."""

    scene: Scene  # frame 0: the mover first, then an optional distractor
    direction: str
    num_frames: int
    distance: float

    @property
    def mover(self) -> Shape:
        return self.scene.shapes[0]

    def frame_scenes(self) -> list[Scene]:
        dx, dy = DIRECTIONS[self.direction]
        step = self.distance / (self.num_frames - 1)
        frames = []
        for t in range(self.num_frames):
            moved = replace(self.mover, x=self.mover.x + dx * step * t, y=self.mover.y + dy * step * t)
            frames.append(self.scene.with_shapes((moved, *self.scene.shapes[1:])))
        return frames


def random_clip(rng: random.Random, config: RenderConfig, min_frames: int = 4, max_frames: int = 8) -> Clip:
    """A clip whose mover crosses about half the image, and a distractor (p=½) in a corner off its path."""
    if not 2 <= min_frames <= max_frames:
        raise ValueError(f"need 2 <= min_frames <= max_frames, got {min_frames}, {max_frames}")
    direction = rng.choice(tuple(DIRECTIONS))
    dx, dy = DIRECTIONS[direction]
    mover = random_shape(rng, (1, 1), config)
    margin = RADIUS[mover.size] + 0.03
    distance = rng.uniform(0.4, 1 - 2 * margin)
    along = margin + rng.uniform(0, 1 - 2 * margin - distance)  # start, measured along the motion
    start = along if dx + dy > 0 else 1 - along
    across = rng.choice((0.3, 0.5, 0.7))
    x, y = (start, across) if dx else (across, start)
    shapes = [replace(mover, x=round(x, 4), y=round(y, 4))]
    if rng.random() < 0.5:
        # Off the path: the row/column of cells farthest from the mover's track.
        far = 0 if across > 0.5 else 2
        cell = (far, rng.randrange(3)) if dx else (rng.randrange(3), far)
        distractor = random_shape(rng, cell, config)
        while (distractor.colour, distractor.shape) == (mover.colour, mover.shape):
            distractor = random_shape(rng, cell, config)
        shapes.append(distractor)
    scene = Scene(tuple(shapes), background=rng.randint(35, 95), seed=rng.getrandbits(32))
    return Clip(scene, direction, rng.randint(min_frames, max_frames), round(distance, 4))


def render_clip(clip: Clip, config: RenderConfig) -> list[Image.Image]:
    """The clip's frames; shape colours stay fixed across frames, pixel noise changes every frame."""
    noise = random.Random(clip.scene.seed ^ 0x5EED)
    return [render_scene(scene, config, noise_rng=noise) for scene in clip.frame_scenes()]


_MOTION_VERBS = ("moves", "goes", "slides", "travels")
_DIRECTION_PHRASES = {"left": "to the left", "right": "to the right", "up": "up", "down": "down"}


def clip_caption(clip: Clip, rng: random.Random) -> str:
    """``"a red circle moves to the left."`` and variants."""
    subject = phrase(clip.mover, size=rng.random() < 0.3)
    if rng.random() < 0.25:
        return f"{subject} moving {clip.direction}."
    return f"{subject} {rng.choice(_MOTION_VERBS)} {_DIRECTION_PHRASES[clip.direction]}."


def clip_question(clip: Clip, rng: random.Random) -> tuple[str, str]:
    """A direction-of-motion question and its one-word answer."""
    name = f"{clip.mover.colour} {clip.mover.shape}"
    question = rng.choice(
        (
            f"Which direction does the {name} move?",
            f"In which direction is the {name} moving?",
            "Where is the shape going?" if len(clip.scene.shapes) == 1 else f"Where is the {name} going?",
        )
    )
    return question, clip.direction
