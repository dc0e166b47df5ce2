"""The paper-scale preset, the device option and the real-IMDb-folder option of the runner."""
from __future__ import annotations

import json

import pytest
import torch

from tdlib.experiments import PRESETS, ExperimentConfig, main, preset, training_device

# the preset's model and image size; the steps and the amount of data are cut (and on CPU the
# batch: one step of the preset's 256 images of 1024 tokens costs about 15 CPU-seconds)
SMALL = ["--steps", "2", "--eval-every", "1", "--n-eval", "8", "--seeds", "0", "--quiet"]


def _run_preset(tmp_path, device, task="pathfinder", extra=()):
    out = tmp_path / f"preset-{device}.json"
    args = ["curves", "--preset", "paper", "--task", task, "--device", device, "--kernels",
            "softmax", "gaussian", "--out", str(out), "--cache-dir", str(tmp_path), *SMALL, *extra]
    if task == "pathfinder":
        args += ["--n-train", "256", "--n-test", "16"]
        if device == "cpu":
            args += ["--batch-size", "8"]
    assert main(args) == 0
    return json.loads(out.read_text())


def test_preset_values_and_overrides():
    cfg = preset("paper", "pathfinder").resolved()
    for k, v in PRESETS["paper"]["pathfinder"].items():
        assert getattr(cfg, k) == v
    assert (cfg.image_size, cfg.optimizer, cfg.D, cfg.H, cfg.layers) == (32, "adam", 64, 2, 2)
    assert preset("paper", "text", steps=5, eval_every=5).resolved().steps == 5
    with pytest.raises(ValueError, match="preset"):
        preset("huge", "text")


@pytest.mark.slow   # the paper-scale model: about 15 CPU-seconds a step
def test_preset_runs_two_steps_on_cpu(tmp_path):
    doc = _run_preset(tmp_path, "cpu")
    assert {r["kernel"] for r in doc["runs"]} == {"softmax", "gaussian"}
    for r in doc["runs"]:
        assert r["device"] == "cpu" and r["config"]["image_size"] == 32
        assert r["config"]["path_length"] == PRESETS["paper"]["pathfinder"]["path_length"]
        assert r["curves"]["step"] == [0, 1, 2] and r["seconds"] > 0 and r["cpu_seconds"] > 0
    prov = doc["provenance"]
    assert "--preset paper" in prov["command"] and prov["wall_seconds"] > 0


def _imdb_folder(tmp_path):
    """A tiny folder in the IMDb layout: 4 positive and 4 negative reviews per split."""
    root = tmp_path / "aclImdb"
    for split in ("train", "test"):
        for lab, word in (("pos", "great"), ("neg", "awful")):
            (root / split / lab).mkdir(parents=True)
            for i in range(4):
                (root / split / lab / f"{i}.txt").write_text(f"a {word} film, number {i}")
    return root


def test_preset_text_reads_an_imdb_folder(tmp_path):
    root = _imdb_folder(tmp_path)
    doc = _run_preset(tmp_path, "cpu", task="text",
                      extra=["--imdb", str(root), "--max-len", "32", "--batch-size", "4"])
    r = doc["runs"][0]
    assert r["config"]["imdb"] == str(root) and r["n_train"] == 8 and r["n_test"] == 8


def test_bad_device_is_named():
    with pytest.raises(ValueError, match="device"):
        training_device("no-such-device")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            training_device("cuda")
    with pytest.raises(SystemExit):
        main(["curves", "--task", "text", "--device", "nonsense", "--out", "x.json"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch")
def test_preset_runs_on_cuda(tmp_path):
    doc = _run_preset(tmp_path, "cuda")
    assert all(r["device"].startswith("cuda") for r in doc["runs"])
    assert all(r["config"]["batch_size"] == 256 for r in doc["runs"])  # the preset's batch


def test_text_preset_needs_imdb_and_imdb_needs_a_length(tmp_path, capsys):
    out = str(tmp_path / "x.json")
    with pytest.raises(SystemExit):
        main(["curves", "--preset", "paper", "--task", "text", "--out", out])
    assert "--imdb" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["curves", "--task", "text", "--imdb", str(tmp_path), "--out", out])
    assert "128" in capsys.readouterr().err and not (tmp_path / "x.json").exists()


def test_gaussian_width_threads_and_landscape_options(tmp_path):
    root = _imdb_folder(tmp_path)
    common = ["--task", "text", "--imdb", str(root), "--max-len", "16", "--batch-size", "4",
              "--steps", "2", "--eval-every", "1", "--quiet", "--threads", "1"]
    out = tmp_path / "c.json"
    assert main(["curves", *common, "--c", "3.5", "--seeds", "0", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    opts = {r["kernel"]: r["config"]["kernel_options"] for r in doc["runs"]}
    assert opts == {"softmax": {}, "gaussian": {"c": 3.5}}
    assert doc["provenance"]["threads"] == 1 and all(r["torch_threads"] == 1 for r in doc["runs"])
    with pytest.raises(SystemExit):
        main(["curves", *common, "--c", "3.5", "--kernels", "softmax", "--out", str(out)])
    ls = tmp_path / "ls.npz"
    assert main(["landscape", *common, "--stage1-steps", "2", "--grid", "3", "--n-loss", "4",
                 "--direction-seed", "7", "--stage1-kernel", "gaussian", "--c", "2.0",
                 "--out", str(ls)]) == 0
    meta = json.loads(ls.with_suffix(".json").read_text())
    assert meta["direction_seed"] == 7 and meta["stage1_kernel"] == "gaussian"
    assert meta["stage1"]["config"]["kernel_options"] == {"c": 2.0}
    assert meta["stage2"]["softmax"]["config"]["kernel_options"] == {}
    assert meta["stage2"]["gaussian"]["config"]["kernel_options"] == {"c": 2.0}
