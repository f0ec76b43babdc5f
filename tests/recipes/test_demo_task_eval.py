"""A demo preset's per-task ``task_eval`` entries override the shots and query count of those tasks only."""

from flamingo_vlm.evaluate.metrics.wups import load_wordnet
from flamingo_vlm.evaluate.runner import EvalConfig
from flamingo_vlm.recipes.demo import DemoConfig, Recipe, TaskEval, load_demo_config


def test_task_eval_overrides_only_its_task(tmp_path) -> None:
    config = DemoConfig(
        eval=EvalConfig(shots=(0, 4, 8), max_examples=50),
        caption_shots=(0, 4),
        task_eval={"vatex": TaskEval(shots=(4,), max_examples=8), "ivqa": TaskEval(max_examples=3)},
    )
    recipe = Recipe(tmp_path, config)
    assert (recipe.task_shots("vatex"), recipe.task_max_examples("vatex")) == ((4,), 8)
    assert (recipe.task_shots("ivqa"), recipe.task_max_examples("ivqa")) == ((0, 4, 8), 3)
    assert (recipe.task_shots("coco"), recipe.task_max_examples("coco")) == ((0, 4), 50)
    assert (recipe.task_shots("vqav2"), recipe.task_max_examples("vqav2")) == ((0, 4, 8), 50)


def test_presets_keep_the_video_sets_small() -> None:
    """The quick presets evaluate each video captioning / QA set on one batch at one shot count."""
    for preset in ("quick", "smollm-quick"):
        task_eval = load_demo_config(preset).task_eval
        video = ("vatex", "youcook2", "ivqa", "nextqa")
        assert {t: (task_eval[t].shots, task_eval[t].max_examples) for t in video} == {t: ((4,), 8) for t in video}


def test_zero_shot_only_tasks_run_at_zero_shots(tmp_path) -> None:
    config = DemoConfig(eval=EvalConfig(shots=(0, 4)), task_eval={"rareact": TaskEval(shots=(0, 4))})
    assert Recipe(tmp_path, config).task_shots("rareact") == (0,)


def test_demo_without_wordnet_leaves_only_nextqa_out(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("FLAMINGO_WORDNET", str(tmp_path / "no-wordnet"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    load_wordnet.cache_clear()  # a reader loaded earlier in this process was found without the variable
    recipe = Recipe(tmp_path, DemoConfig())
    recipe.check_wordnet()
    load_wordnet.cache_clear()
    assert "nextqa" not in recipe.config.tasks
    assert set(recipe.config.tasks) == set(DemoConfig().tasks) - {"nextqa"}
    assert "wordnet-base" in capsys.readouterr().out
