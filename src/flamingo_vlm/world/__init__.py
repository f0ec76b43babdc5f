"""ShapesWorld: a small procedurally rendered world that exercises every path of the real system."""

from flamingo_vlm.evaluate.tasks.episodic import Episode, read_episodes  # the format is the harness's
from flamingo_vlm.world.generate import PRESETS, WorldConfig, WorldSizes, generate_world
from flamingo_vlm.world.scene import RenderConfig, Scene, Shape, random_scene, render_scene
from flamingo_vlm.world.text import TextMix, TextProbe, text_binding_probes, text_corpus

__all__ = [
    "PRESETS",
    "Episode",
    "RenderConfig",
    "Scene",
    "Shape",
    "TextMix",
    "TextProbe",
    "WorldConfig",
    "WorldSizes",
    "generate_world",
    "random_scene",
    "read_episodes",
    "render_scene",
    "text_binding_probes",
    "text_corpus",
]
