import io

import webdataset as wds
from PIL import Image
from transformers import AutoModelForCausalLM

from flamingo_vlm.cli import main
from flamingo_vlm.model.vision import load_vision_encoder


def test_pretrain_lm_cli_writes_a_hub_style_model(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(["the red square is above the blue circle."] * 20))
    out = tmp_path / "lm"
    assert (
        main(
            [
                "pretrain",
                "lm",
                "--text",
                str(text),
                "--out",
                str(out),
                "--vocab-size",
                "300",
                "--steps",
                "3",
                "--hidden-size",
                "32",
                "--num-layers",
                "1",
                "--num-heads",
                "2",
                "--intermediate-size",
                "64",
                "--context",
                "16",
                "--batch-size",
                "2",
            ]
        )
        == 0
    )
    assert AutoModelForCausalLM.from_pretrained(out).config.model_type == "llama"


def test_pretrain_vision_cli_reads_pair_shards(tmp_path, tokenizer_dir):
    shards = tmp_path / "pairs"
    shards.mkdir()
    with wds.TarWriter(str(shards / "pairs-0000.tar")) as writer:
        for i, colour in enumerate(["red", "green", "blue", "white"] * 2):
            buf = io.BytesIO()
            Image.new("RGB", (40, 40), colour).save(buf, format="PNG")
            writer.write({"__key__": f"{i:04d}", "png": buf.getvalue(), "txt": f"a {colour} square"})
    out = tmp_path / "vision"
    assert (
        main(
            [
                "pretrain",
                "vision",
                "--pairs",
                str(shards),
                "--tokenizer",
                tokenizer_dir,
                "--out",
                str(out),
                "--image-size",
                "32",
                "--width",
                "16",
                "--batch-size",
                "4",
                "--steps",
                "2",
                "--text-width",
                "16",
                "--text-layers",
                "1",
                "--text-heads",
                "2",
                "--embed-dim",
                "8",
            ]
        )
        == 0
    )
    assert load_vision_encoder(str(out)).image_size == 32
