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
