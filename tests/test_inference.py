import pytest
from PIL import Image

from flamingo_vlm.cli import main


def test_flamingo_generate_prints_an_answer(tiny_flamingo_dir, tmp_path, capsys):
    image = tmp_path / "red.png"
    Image.new("RGB", (40, 20), "red").save(image)
    code = main(
        [
            "generate",
            "--model",
            tiny_flamingo_dir,
            "--image",
            str(image),
            "--prompt",
            "<image>Question: what colour? Answer:",
            "--max-new-tokens",
            "4",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert out.endswith("\n") and out.count("\n") == 1  # one line: the answer, cut at a line break
    assert "Question:" not in out and "Answer:" not in out  # ... and at the prompt's next field label


def test_flamingo_generate_names_a_missing_image(tiny_flamingo_dir, tmp_path):
    """Fuzz campaign: a mistyped --image path ended in a FileNotFoundError traceback after loading the model."""
    with pytest.raises(ValueError, match=r"--image: no such file '.*nothing\.jpg'"):
        main(["generate", "--model", tiny_flamingo_dir, "--image", str(tmp_path / "nothing.jpg"), "--device", "cpu"])


def test_flamingo_generate_with_a_device_map_answers_the_same(tiny_flamingo_dir, tmp_path, capsys):
    image = tmp_path / "red.png"
    Image.new("RGB", (40, 20), "red").save(image)
    args = ["generate", "--model", tiny_flamingo_dir, "--image", str(image), "--max-new-tokens", "4"]
    assert main([*args, "--device", "cpu"]) == 0
    plain = capsys.readouterr().out
    assert main([*args, "--device-map", "auto", "--lm-dtype", "fp32"]) == 0  # accelerate: all on the CPU here
    assert capsys.readouterr().out == plain
